"""Entry point: the same CLI as the `kwsnet` console script."""

from kwsnet.entry import main

if __name__ == "__main__":
    main()

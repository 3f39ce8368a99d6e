/* kwsnet-stream's entry point, callable from another CLI (kwsnet-infer --stream). */
#ifndef KWSNET_STREAM_TOOL_H
#define KWSNET_STREAM_TOOL_H
/* argv[0] is the program name; argv[1..] as for kwsnet-stream. Returns the exit status. */
int kwsn_stream_main(int argc, char **argv);
#endif

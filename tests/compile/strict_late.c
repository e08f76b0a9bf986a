/* Strict C99, declarations first, no _POSIX_C_SOURCE: the implementation
   must stop with the #error that explains the fix (build.sh expects this
   file to fail to compile, with that message). */
#include "taskstore.h"
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"

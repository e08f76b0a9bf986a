/* A user's own header includes taskstore.h for declarations first; the
   implementation must still appear when the define comes later. Under a
   strict -std=c99 the file must ask for POSIX itself, before any include
   (taskstore.h can only do it when the implementation comes first, and
   says so with an #error otherwise). */
#define _POSIX_C_SOURCE 200809L
#include "taskstore.h"
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#ifndef TASKSTORE_IMPL_INCLUDED
#error "the implementation was not compiled"
#endif
int main(void) { return ts_result_str(TS_E_CORRUPT)[0] ? 0 : 1; }

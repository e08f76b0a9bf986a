/* A user's own header includes taskstore.h for declarations first; the
   implementation must still appear when the define comes later. */
#include "taskstore.h"
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#ifndef TASKSTORE_IMPL_INCLUDED
#error "the implementation was not compiled"
#endif
int main(void) { return ts_result_str(TS_E_CORRUPT)[0] ? 0 : 1; }

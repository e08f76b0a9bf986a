/* A misspelled implementation define compiles nothing; the check below must
   catch that, so build.sh expects this file to FAIL to compile. */
#define TASKSTORE_IMPLEMENTATIOn
#include "taskstore.h"
#ifndef TASKSTORE_IMPL_INCLUDED
#error "the implementation was not compiled (as expected for this test)"
#endif

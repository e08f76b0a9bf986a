/* The implementation compiled alone; build.sh compiles this file as C99 and
   as C++11 with gcc and clang, and once per configuration macro. */
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include "taskstore.h" /* a second include is harmless */
#ifndef TASKSTORE_IMPL_INCLUDED
#error "the implementation was not compiled"
#endif

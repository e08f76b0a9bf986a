#define TASKSTORE_STATIC
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include <string.h>
int static_b_version_ok(void);
int static_b_version_ok(void) { return strcmp(ts_version(), TASKSTORE_VERSION_STRING) == 0; }

/* Two translation units each with a private (TASKSTORE_STATIC) copy of the
   library link together without clashes. */
#define TASKSTORE_STATIC
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include <string.h>
int static_b_version_ok(void);
int main(void)
{
    return (strcmp(ts_version(), TASKSTORE_VERSION_STRING) == 0 && static_b_version_ok()) ? 0 : 1;
}

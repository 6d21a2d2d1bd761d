// The C half of the slog adapter (log.go): a qm_log_fn that hands each record to the
// exported Go function qmGoLog, with the logger's cgo.Handle as the user pointer.
#include <stdbool.h>
#include <stdint.h>
#include <qm.h>
#include "_cgo_export.h"

static void qmGoLogTrampoline(void *user, qm_log_level level, const char *target,
                              const char *message, double timestamp)
{
    qmGoLog((uintptr_t)user, level, (char *)target, (char *)message, timestamp);
}

bool qmGoSetLogCallback(uintptr_t handle)
{
    return qm_set_log_callback(qmGoLogTrampoline, (void *)handle);
}

/*
 * valgrind_probe.c: can qm launch QEMU in this process? Run by tests/c/run.sh under valgrind
 * before the C tests: valgrind 3.19 (Debian 12) does not implement pidfd_open, which qm's core
 * needs to launch QEMU, and fails it with ENOSYS.
 *
 * Exit status: 0 launched fine; 3 the launch failed with ENOSYS; 1 any other failure.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "qm.h"

int main(void)
{
    const char *binary = getenv("QM_QEMU");
    qm_machine *m = NULL;
    qm_error *err = NULL;
    int code = 0, rc = 0;
    if (qm_new(binary && *binary ? binary : "qemu-system-x86_64", &m, &err) != QM_OK ||
        qm_set_machine(m, "none", &err) != QM_OK)
        rc = 1;
    else if (qm_launch(m, &err) != QM_OK) {
        rc = qm_error_os_code(err, &code) && code == ENOSYS ? 3 : 1;
        fprintf(stderr, "valgrind probe: %s\n", qm_error_message(err));
    } else if (qm_shutdown(m, false, QM_WAIT_DEFAULT, NULL, &err) != QM_OK)
        rc = 1;
    qm_error_free(err);
    qm_free(m);
    return rc;
}

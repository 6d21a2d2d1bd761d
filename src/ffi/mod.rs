//! The C ABI (see `include/qm.h`). Only this module knows about C.

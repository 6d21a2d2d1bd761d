//! What the integration tests share: `mod support;` in a test file brings every helper, each
//! module naming what it needs itself (no `#[path]` includes that silently depend on the
//! including file declaring other modules).
//!
//! - [`vm`]: machines on a real QEMU, scratch directories, cleanup checks.
//! - [`fake_qmp`]: a scripted QMP peer, for faults real QEMU will not produce.
//! - [`fake_client`]: a `QmpClient` connected to a [`fake_qmp`] peer.
//! - [`linux_guest`]: the Linux test guest (guest/linux), built once per test process.
//! - [`fake_qga`]: a fake guest agent peer, for faults a real `qemu-ga` will not produce.
//! - `cli`: the `qm` command line through pipes (only with `--features cli`, which builds it).

#[cfg(feature = "cli")]
pub mod cli;
pub mod fake_client;
pub mod fake_qga;
pub mod fake_qmp;
pub mod linux_guest;
pub mod vm;

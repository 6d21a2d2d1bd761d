//go:build !qm_pkgconfig

package qm

// By default the package links the static library of the checkout it lives in
// (target/release/libqm.a, built by `cargo build --release --lib`), so programs need no
// LD_LIBRARY_PATH. The extra libraries are what rustc links a static Rust library with
// (`cargo rustc --release --lib --crate-type staticlib -- --print native-static-libs`).
// Build with `-tags qm_pkgconfig` to use an installed qm instead (see link_pkgconfig.go).

// #cgo CFLAGS: -I${SRCDIR}/../../include
// #cgo LDFLAGS: ${SRCDIR}/../../target/release/libqm.a -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
import "C"

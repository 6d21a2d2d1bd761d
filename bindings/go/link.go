package qm

// The package finds the C library through pkg-config (qm.pc), as cgo packages conventionally
// do, with no build tag:
//
//   - outside the qm repository: "make install PREFIX=<prefix>" in a checkout, then
//     PKG_CONFIG_PATH=<prefix>/lib/pkgconfig (unless the prefix is a standard one). The program
//     links libqm.so: for a non-standard prefix, make it findable at run time (an rpath through
//     CGO_LDFLAGS="-Wl,-rpath,<prefix>/lib", or LD_LIBRARY_PATH, or ldconfig);
//   - inside the repository: "make" writes target/pkgconfig/qm.pc, the in-tree qm (the
//     checkout's static target/release/libqm.a and include/), and "make test-go" or
//     bindings/go/run-tests.sh put that directory in PKG_CONFIG_PATH.
//
// Without either, cgo fails with pkg-config's "Package qm was not found in the pkg-config
// search path" and the hint to add the directory of qm.pc to PKG_CONFIG_PATH. A qm.h of
// another version than this package's fails with the #error below.

// #cgo pkg-config: qm
// #include <qm.h>
// #if !defined(QM_VERSION_MAJOR) || QM_VERSION_MAJOR != 0 || QM_VERSION_MINOR != 2
// #error "qm: this Go package needs qm 0.2.x; the qm.h that pkg-config found is another version (check PKG_CONFIG_PATH)"
// #endif
import "C"

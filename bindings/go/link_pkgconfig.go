//go:build qm_pkgconfig

package qm

// With `-tags qm_pkgconfig` the package links the qm that `make install` installed, found
// through pkg-config (qm.pc): set PKG_CONFIG_PATH to <prefix>/lib/pkgconfig when the prefix is
// not a standard one, and make libqm.so findable at run time (ldconfig, an rpath through
// CGO_LDFLAGS="-Wl,-rpath,<prefix>/lib", or LD_LIBRARY_PATH).

// #cgo pkg-config: qm
import "C"

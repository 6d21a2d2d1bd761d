package qm

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The Status table is Go's copy of the C library's statuses (with Go names and sentinels):
// every status the library names has a row, and no row is past the library's last status.
func TestStatusTableMatchesTheLibrary(t *testing.T) {
	for s := StatusOK; s < statusCount; s++ {
		name := coreStatusName(s)
		if name == "QM_ERR_UNKNOWN" {
			t.Errorf("status %d (%v) is not one of the library's", int(s), s)
		}
		if s != StatusOK && sentinel(s) == nil {
			t.Errorf("status %s has no sentinel error", name)
		}
	}
	for s := statusCount; s < statusCount+32; s++ {
		if name := coreStatusName(s); name != "QM_ERR_UNKNOWN" {
			t.Errorf("the library has status %d (%s), the Go table does not", int(s), name)
		}
	}
}

// millis (time.Duration → ms, exact) follows the library's rule for seconds: rounded up.
func TestMillisFollowsTheLibrarysRule(t *testing.T) {
	for _, d := range []time.Duration{0, time.Nanosecond, 400 * time.Microsecond, time.Millisecond,
		1500 * time.Microsecond, 3 * time.Millisecond, 1100 * time.Millisecond, 30 * time.Second} {
		want, err := coreMillis(d.Seconds())
		if err != nil {
			t.Fatalf("%v: %v", d, err)
		}
		if got := int64(millis(d)); got != want {
			t.Errorf("millis(%v) = %d, the library says %d", d, got, want)
		}
	}
	if _, err := coreMillis(-1); err == nil {
		t.Error("negative seconds: no error")
	}
}

func TestDefaultTimeoutIsTheLibrarys(t *testing.T) {
	if DefaultTimeout != 30*time.Second {
		t.Errorf("DefaultTimeout = %v", DefaultTimeout)
	}
}

// link.go refuses a qm.h of another major.minor than the package's: that pair must be the
// library's version (Cargo.toml's, the one source).
func TestLinkVersionCheckIsTheLibrarys(t *testing.T) {
	src, err := os.ReadFile("link.go")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`QM_VERSION_MAJOR != (\d+) \|\| QM_VERSION_MINOR != (\d+)`).FindSubmatch(src)
	if m == nil {
		t.Fatal("link.go has no version check")
	}
	want := fmt.Sprintf("%s.%s.", m[1], m[2])
	if v := Version(); !strings.HasPrefix(v, want) {
		t.Errorf("link.go checks for %sx, the library is %s", want, v)
	}
}

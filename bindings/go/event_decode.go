package qm

import (
	"bytes"
	"encoding/json"
)

// Decoding an event the library returned, on the path of every Event and EventWait (issue #20).
//
// json.Unmarshal into Event is correct for any text, but it is reflection over a scanner, and
// right after a blocking call (caches cold: QEMU ran meanwhile) it took 20-35 us of the ~60 us
// the Go binding added to a stop -> STOP round trip on the benchmark machine, ten times its cost
// in a loop. The library writes one event in one form: serde_json's compact text of the event,
// members in sorted order,
//
//	{"data":{...},"event":"NAME","timestamp":{"microseconds":N,"seconds":N}}
//
// ("data" absent when the event has none). quickEvent reads exactly that form, from the end,
// and declines (false) anything else, which json.Unmarshal then decodes: a name with escapes,
// another member, another order, a number that is not a plain unsigned integer. It checks what
// it relies on rather than trusting the form: a text it accepts decodes to what json.Unmarshal
// gives (event_decode_internal_test.go compares the two).

var (
	quickTail    = []byte("}}")
	quickSeconds = []byte(`,"seconds":`)
	quickMicros  = []byte(`,"timestamp":{"microseconds":`)
	quickEvName  = []byte(`"event":`)
	quickData    = []byte(`{"data":`)
)

// quickEvent decodes raw when it is in the library's form; raw becomes the event's Raw.
func quickEvent(raw []byte) (Event, bool) {
	s, ok := bytes.CutSuffix(raw, quickTail)
	if !ok {
		return Event{}, false
	}
	seconds, s, ok := trailingUint(s)
	if !ok {
		return Event{}, false
	}
	if s, ok = bytes.CutSuffix(s, quickSeconds); !ok {
		return Event{}, false
	}
	micros, s, ok := trailingUint(s)
	if !ok {
		return Event{}, false
	}
	if s, ok = bytes.CutSuffix(s, quickMicros); !ok {
		return Event{}, false
	}
	// "NAME", with no escape in it (an escaped quote would end the name early: declined too).
	if s, ok = bytes.CutSuffix(s, []byte{'"'}); !ok {
		return Event{}, false
	}
	q := bytes.LastIndexByte(s, '"')
	if q < 0 || bytes.IndexByte(s[q+1:], '\\') >= 0 {
		return Event{}, false
	}
	name := s[q+1:]
	if s, ok = bytes.CutSuffix(s[:q], quickEvName); !ok {
		return Event{}, false
	}
	e := Event{Name: string(name), Timestamp: Timestamp{Seconds: seconds, Microseconds: micros}, Raw: raw}
	if len(s) == 1 && s[0] == '{' {
		return e, true
	}
	// {"data":VALUE, where VALUE must be one object that ends right before the comma (another
	// member between "data" and "event" would not).
	s, ok = bytes.CutPrefix(s, quickData)
	if !ok {
		return Event{}, false
	}
	if s, ok = bytes.CutSuffix(s, []byte{','}); !ok || objectEnd(s) != len(s) {
		return Event{}, false
	}
	e.Data = append(json.RawMessage(nil), s...)
	return e, true
}

// trailingUint parses the decimal digits at the end of s (1 to 18 of them, no leading zero
// unless the number is 0) and returns their value and what comes before them.
func trailingUint(s []byte) (int64, []byte, bool) {
	i := len(s)
	for i > 0 && s[i-1] >= '0' && s[i-1] <= '9' {
		i--
	}
	digits := s[i:]
	if len(digits) == 0 || len(digits) > 18 || (len(digits) > 1 && digits[0] == '0') {
		return 0, s, false
	}
	var n int64
	for _, d := range digits {
		n = n*10 + int64(d-'0')
	}
	return n, s[:i], true
}

// objectEnd returns where the JSON object at the start of s ends (the index after its closing
// brace), or -1 when s does not start with one. s is part of a valid JSON text, so only strings
// and nesting need following.
func objectEnd(s []byte) int {
	if len(s) == 0 || s[0] != '{' {
		return -1
	}
	depth, inString, escaped := 0, false, false
	for i, b := range s {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case b == '\\':
				escaped = true
			case b == '"':
				inString = false
			}
		case b == '"':
			inString = true
		case b == '{' || b == '[':
			depth++
		case b == '}' || b == ']':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return -1
}

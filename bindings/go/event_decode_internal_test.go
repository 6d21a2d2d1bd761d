package qm

import (
	"encoding/json"
	"reflect"
	"testing"
)

// quickEvent accepts the library's form of an event and decodes it as json.Unmarshal does;
// anything else it declines, for json.Unmarshal to decode.
func TestQuickEventMatchesUnmarshal(t *testing.T) {
	accepted := []string{
		`{"event":"STOP","timestamp":{"microseconds":123456,"seconds":1733590000}}`,
		`{"data":{"guest":true,"reason":"guest-shutdown"},"event":"SHUTDOWN","timestamp":{"microseconds":0,"seconds":0}}`,
		`{"data":{"s":"a } ] \" { [ b","n":[1,{"x":[]}],"e":{}},"event":"X_Y","timestamp":{"microseconds":9,"seconds":17}}`,
		`{"data":{},"event":"é","timestamp":{"microseconds":1,"seconds":2}}`,
	}
	for _, text := range accepted {
		got, ok := quickEvent([]byte(text))
		if !ok {
			t.Errorf("declined the library's form: %s", text)
			continue
		}
		var want Event
		if err := json.Unmarshal([]byte(text), &want); err != nil {
			t.Fatal(err)
		}
		want.Raw = []byte(text)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", text, got, want)
		}
		if got.Data != nil && &got.Data[0] == &got.Raw[len(`{"data":`)] {
			t.Errorf("%s: Data shares Raw's memory", text)
		}
	}
	declined := []string{
		`{"timestamp":{"seconds":1,"microseconds":2},"event":"STOP"}`,                    // QEMU's order
		`{"event":"ST\"OP","timestamp":{"microseconds":1,"seconds":2}}`,                  // an escaped quote
		`{"event":"ST\u004fP","timestamp":{"microseconds":1,"seconds":2}}`,               // an escape
		`{"data":{"a":1},"dz":2,"event":"X","timestamp":{"microseconds":1,"seconds":2}}`, // another member
		`{"a":1,"event":"X","timestamp":{"microseconds":1,"seconds":2}}`,
		`{"data":5,"event":"X","timestamp":{"microseconds":1,"seconds":2}}`,           // data not an object
		`{"event":"X","timestamp":{"microseconds":-1,"seconds":2}}`,                   // a sign
		`{"event":"X","timestamp":{"microseconds":1.5,"seconds":2}}`,                  // a fraction
		`{"event":"X","timestamp":{"microseconds":01,"seconds":2}}`,                   // a leading zero
		`{"event":"X","timestamp":{"microseconds":1,"seconds":12345678901234567890}}`, // too long
		`{"event":"X","timestamp":{"microseconds":1,"seconds":2},"z":0}`,
		`{"event":"X","timestamp":{"microseconds":1,"seconds":2}} `,
		`"event":"X","timestamp":{"microseconds":1,"seconds":2}}`,
		``,
	}
	for _, text := range declined {
		if e, ok := quickEvent([]byte(text)); ok {
			t.Errorf("accepted %s as %+v", text, e)
		}
	}
	// Declined texts still decode, through json.Unmarshal.
	e, err := parseEvent([]byte(declined[0]))
	if err != nil || e.Name != "STOP" || e.Timestamp.Microseconds != 2 {
		t.Errorf("parseEvent(%s) = %+v, %v", declined[0], e, err)
	}
}

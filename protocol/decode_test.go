package protocol

import (
	"bytes"
	"encoding/json"
	"io"
	"testing"
)

// decodeVersionFirst is the reference decodeStrict: the version is read on
// its own before the strict decode. decodeStrict reads it only when the
// strict decode fails or finds another version, and must refuse exactly
// the same messages with exactly the same errors.
func decodeVersionFirst(msg string, data []byte, v any) error {
	if len(data) > MaxMessageSize {
		return fieldErr(msg, "", "%d bytes is over the %d-byte limit", len(data), MaxMessageSize)
	}
	if err := checkVersion(msg, data); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonErr(msg, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fieldErr(msg, "", "trailing data after the JSON object")
	}
	return nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func FuzzDecodeStrictSameAsVersionFirst(f *testing.F) {
	good, _ := EncodeReport(sampleReport())
	for _, s := range []string{string(good), `{"v":1}`, `{"v":2,"x":1}`, `{"x":1}`, `{"v":null}`, `{"v":"1"}`,
		`{"v":1.5,"seq":-1}`, `{"V":1}`, `{"v":1,"v":2}`, `{"v":1} x`, `{"v":2} {`, `{"v":1,"seq":"a"}`, `[1]`, ``, `{"seq":1,`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var a, b Report
		errA := decodeStrict(reportMsg, data, &a, &a.Version)
		errB := decodeVersionFirst(reportMsg, data, &b)
		if errString(errA) != errString(errB) {
			t.Fatalf("%q:\n decodeStrict:  %v\n version first: %v", data, errA, errB)
		}
	})
}

func BenchmarkDecodeReport(b *testing.B) {
	data, err := EncodeReport(sampleReport())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeReport(data); err != nil {
			b.Fatal(err)
		}
	}
}

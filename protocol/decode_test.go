package protocol

import (
	"bytes"
	"encoding/json"
	"io"
	"reflect"
	"strings"
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

// decodeReportStrictOnly is DecodeReport without its fast path.
func decodeReportStrictOnly(data []byte) (*Report, error) {
	var r Report
	if err := decodeStrict(reportMsg, data, &r, &r.Version); err != nil {
		return nil, err
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

func fastSeeds(t testing.TB) [][]byte {
	good, err := EncodeReport(sampleReport())
	if err != nil {
		t.Fatal(err)
	}
	indented, _ := json.MarshalIndent(sampleReport(), " ", "\t")
	min := sampleReport()
	min.IMEISV, min.IMSI, min.Location, min.Signal, min.Acks, min.Dropped, min.Registration.Cell = "", "", nil, nil, nil, 0, nil
	minimal, _ := EncodeReport(min)
	seeds := [][]byte{good, indented, minimal, []byte(" \r\n" + string(good) + "\n\t ")}
	s := string(good)
	for _, v := range []struct{ from, to string }{
		{`"seq":42`, `"seq":42.0`}, {`"seq":42`, `"seq":4.2e1`}, {`"seq":42`, `"seq":-42`}, {`"seq":42`, `"seq":042`},
		{`"seq":42`, `"seq":18446744073709551616`}, {`"seq":42`, `"seq":null`}, {`"seq":42`, `"Seq":42`},
		{`"seq":42`, `"seq":42,"seq":43`}, {`"v":1`, `"v":2`}, {`"v":1`, `"v":-0`}, {`"v":1`, `"v":1e0`},
		{`"stat":1`, `"stat":-1`}, {`"stat":1`, `"stat":9223372036854775808`}, {`"area":12741`, `"area":4294967296`},
		{`"lat":31.2304`, `"lat":-3.12304E+1`}, {`"lat":31.2304`, `"lat":1e400`}, {`"lat":31.2304`, `"lat":-0`},
		{`"lat":31.2304`, `"lat":.5`}, {`"lat":31.2304`, `"lat":5.`}, {`"acks":["cmd-1"]`, `"acks":[]`},
		{`"acks":["cmd-1"]`, `"acks":["a","b"]`}, {`"acks":["cmd-1"]`, `"acks":[1]`}, {`"acks":["cmd-1"]`, `"acks":null`},
		{`"device_id":"gw-0001"`, `"device_id":"gw-\u0030001"`}, {`"device_id":"gw-0001"`, `"device_id":"gw-é"`},
		{`"device_id":"gw-0001"`, `"device_id":"gw-0001","x":1`}, {`"signal":{"rssi_dbm":-79}`, `"signal":{}`},
		{`"signal":{"rssi_dbm":-79}`, `"signal":{"rssi_dbm":-79,"rssi_dbm":-1}`}, {`"location":{`, `"location":{"source":"cell",`},
		{`"time":"2026-11-26T20:00:00.123456789Z"`, `"time":"2026-11-26T20:00:00+08:00"`},
		{`"time":"2026-11-26T20:00:00.123456789Z"`, `"time":"2026-11-26 20:00:00Z"`},
		{`"registration":{`, `"registration":{"cell":null,`}, {`"sig":"`, `"sig":"!`}, {`"sig":"`, `"sig":"A`},
	} {
		if !strings.Contains(s, v.from) {
			t.Fatalf("seed: %q not in %s", v.from, s)
		}
		seeds = append(seeds, []byte(strings.Replace(s, v.from, v.to, 1)))
	}
	return seeds
}

// The usual shapes of a report take the fast path.
func TestDecodeReportFastTakesUsualReports(t *testing.T) {
	for i, data := range fastSeeds(t)[:4] {
		var r Report
		if !decodeReportFast(data, &r) {
			t.Errorf("seed %d not decoded by the fast path:\n%s", i, data)
		}
	}
}

func checkFastSameAsStrict(t *testing.T, data []byte) {
	var fast Report
	if decodeReportFast(data, &fast) {
		var strict Report
		if err := decodeStrict(reportMsg, data, &strict, &strict.Version); err != nil {
			t.Fatalf("fast path accepts what decodeStrict refuses (%v):\n%s", err, data)
		}
		if !reflect.DeepEqual(fast, strict) {
			t.Fatalf("fast path decodes\n%+v\ndecodeStrict\n%+v\nfrom %s", fast, strict, data)
		}
	}
	got, err := DecodeReport(data)
	want, wantErr := decodeReportStrictOnly(data)
	if errString(err) != errString(wantErr) || !reflect.DeepEqual(got, want) {
		t.Fatalf("DecodeReport = %+v, %v\nwithout the fast path %+v, %v\nfrom %s", got, err, want, wantErr, data)
	}
}

func TestDecodeReportFastSameAsStrict(t *testing.T) {
	for _, data := range fastSeeds(t) {
		checkFastSameAsStrict(t, data)
	}
}

func FuzzDecodeReportFast(f *testing.F) {
	for _, s := range fastSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(checkFastSameAsStrict)
}

package radius

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
)

var writeCorpus = flag.Bool("write-corpus", false, "rewrite the seed corpora in testdata/fuzz")

// FuzzDecode feeds arbitrary datagrams to Decode. It must never panic, and
// a record it accepts must survive EncodeRequest and Decode unchanged
// (less the attributes it skipped).
func FuzzDecode(f *testing.F) {
	for _, b := range decodeSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := Decode(b)
		if err != nil {
			if rec != nil {
				t.Fatalf("Decode returned a record with error %v", err)
			}
			return
		}
		again, err := EncodeRequest(rec, 1, []byte("k"))
		if err != nil {
			return // e.g. status 0, which the encoder refuses
		}
		got, err := Decode(again)
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v\nrecord %+v", err, rec)
		}
		want := *rec
		want.Skipped = nil
		if !reflect.DeepEqual(*got, want) {
			t.Fatalf("round trip changed the record:\n got %+v\nwant %+v", *got, want)
		}
	})
}

// FuzzDecodeUserLocation feeds arbitrary 3GPP-User-Location-Info values to
// DecodeUserLocation: no panic, and what decodes encodes back to the same.
func FuzzDecodeUserLocation(f *testing.F) {
	for _, b := range locationSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		u, err := DecodeUserLocation(b)
		if err != nil {
			return
		}
		_ = u.Cell()
		enc, err := u.Encode()
		if err != nil {
			t.Fatalf("decoded location %+v does not encode: %v", u, err)
		}
		again, err := DecodeUserLocation(enc)
		if err != nil || !reflect.DeepEqual(again, u) {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, u)
		}
	})
}

func decodeSeeds() [][]byte {
	full := []attr{start, sessionID, imsi, imeisv, calling, framedIP, framedV6, sgsn, uliTAIECGI}
	seeds := [][]byte{
		request(1, "s", full...),
		request(2, "s", start),
		request(3, "s", u32attr(40, 2), imsi, framedIP),
		request(4, "s", u32attr(40, 3), calling, g(20, unhex("5384 2890 2143 6510"))),
		request(5, "s", start, g(1, "46011")),
		request(6, "s", start, g(20, "35488209123456AB")),
		request(7, "s", start, attr{97, []byte{0, 129, 0x20}}),
		request(8, "s", start, g(22, unhex("82 64f011 5a1b"))),
		request(9, "s", start, attr{26, []byte{0, 0, 0x28, 0xaf, 1, 9, '4'}}),
		request(10, "s", u32attr(40, 7)),
		request(11, "s", imsi),
	}
	rec := wantFull
	rec.NASIdentifier = "pgw"
	if b, err := EncodeRequest(&rec, 12, []byte("s")); err == nil {
		seeds = append(seeds, b)
	}
	return append(seeds, []byte{4, 1, 0, 20}, nil)
}

func locationSeeds() [][]byte {
	var seeds [][]byte
	for _, h := range []string{
		"82 64f011 5a1b 64f011 01a2b301", "81 00f110 f1234567", "80 130014 0001",
		"00 64f011 2a00 1b2c", "01 64f011 2a00 0101", "02 64f011 2a00 07ff", "87 64f011 000001", "80 a4f011 5a1b", "",
	} {
		seeds = append(seeds, []byte(unhex(h)))
	}
	return seeds
}

// TestWriteFuzzCorpus writes the seeds above as the committed seed corpora
// (go test -run TestWriteFuzzCorpus -write-corpus).
func TestWriteFuzzCorpus(t *testing.T) {
	if !*writeCorpus {
		t.Skip("run with -write-corpus to rewrite testdata/fuzz")
	}
	for name, seeds := range map[string][][]byte{"FuzzDecode": decodeSeeds(), "FuzzDecodeUserLocation": locationSeeds()} {
		dir := filepath.Join("testdata", "fuzz", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, b := range seeds {
			sum := sha256.Sum256(b)
			data := "go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n"
			if err := os.WriteFile(filepath.Join(dir, "seed-"+hex.EncodeToString(sum[:8])), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

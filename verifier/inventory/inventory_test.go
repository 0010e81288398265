package inventory

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
)

type result struct {
	items []Item
	errs  map[int]string
}

func readAll(t *testing.T, in string, f Format) (result, error) {
	t.Helper()
	res := result{errs: map[int]string{}}
	err := Read(strings.NewReader(in), f, "", func(it Item, err error) error {
		if err != nil {
			var le *LineError
			if !errors.As(err, &le) {
				t.Fatalf("line error %v is not a *LineError", err)
			}
			res.errs[le.Line] = err.Error()
			return nil
		}
		res.items = append(res.items, it)
		return nil
	})
	return res, err
}

func TestCSV(t *testing.T) {
	in := "\ufeffICCID,tenant,imsi,msisdn,imei,mode,grace\n" +
		"89860318640220133897,acme,460031234567890,8613912345678,356938035643809,,\n" +
		"8901260886258128535F,acme,,+8613912345679,356938035643809;352099001761481,alert,30s\n" +
		"\n" +
		"123,acme,,,,,\n" +
		"89860436101892671308,acme,4600,,,,\n" +
		"89860436101892671308,acme,,,,,\n" +
		"89860436101892671308,acme\n" +
		"8910042348144559361,acme,,,356938035643808,,\n" +
		"8910042348144559361,acme,,,,sometimes,\n" +
		"8910042348144559361,,,,,,\n"
	res, err := readAll(t, in, CSV)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.items) != 3 {
		t.Fatalf("%d items: %+v (errors %v)", len(res.items), res.items, res.errs)
	}
	a := res.items[0]
	if a.Line != 2 || a.Card.ICCID != "89860318640220133897" || a.Card.MSISDN != "+8613912345678" || a.Card.IMSI != "460031234567890" {
		t.Errorf("first item: %+v", a)
	}
	if a.Binding == nil || len(a.Binding.IMEIs) != 1 || !a.Binding.AutoResume || a.Binding.Mode != "block" {
		t.Errorf("first binding: %+v", a.Binding)
	}
	b := res.items[1]
	if b.Card.ICCID != "8901260886258128535" || len(b.Binding.IMEIs) != 2 || b.Binding.Mode != "alert" || b.Binding.Grace != 30*time.Second {
		t.Errorf("second item: %+v %+v", b.Card, b.Binding)
	}
	if res.items[2].Binding != nil {
		t.Errorf("line without binding columns got a binding")
	}
	want := map[int]string{5: "has 3 characters", 6: "imsi", 8: "has 2 fields", 9: "check digit", 10: "mode", 11: "tenant: required"}
	for line, text := range want {
		if !strings.Contains(res.errs[line], text) {
			t.Errorf("line %d error %q, want it to contain %q", line, res.errs[line], text)
		}
	}
	if len(res.errs) != len(want) {
		t.Errorf("errors: %v", res.errs)
	}
}

func TestCSVHeaderErrors(t *testing.T) {
	for in, want := range map[string]string{
		"":               "csv header",
		"iccid,colour\n": `unknown column "colour"`,
		"iccid,iccid\n":  "twice",
		"tenant,imsi\n":  "no iccid column",
	} {
		if _, err := readAll(t, in, CSV); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("header %q: %v, want %q", in, err, want)
		}
	}
}

func TestNDJSON(t *testing.T) {
	in := `{"iccid":"89860318640220133897","tenant":"acme","imei":["356938035643809"],"auto_resume":false}
{"iccid":"8901260886258128535","tenant":"acme","msisdn":"+8613912345679"}

not json
{"iccid":"8901260886258128535","tenant":"acme","imsi":460031234567890}
{"iccid":"8901260886258128535","tenant":"acme","colour":"red"}
{"iccid":"8901260886258128535","tenant":"acme","imei":[1]}
`
	res, err := readAll(t, in, NDJSON)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.items) != 2 || res.items[0].Binding == nil || res.items[0].Binding.AutoResume || res.items[1].Card.MSISDN != "+8613912345679" {
		t.Fatalf("items: %+v", res.items)
	}
	want := map[int]string{4: "not a JSON object", 5: "write identifiers as strings", 6: "unknown field", 7: "want strings"}
	for line, text := range want {
		if !strings.Contains(res.errs[line], text) {
			t.Errorf("line %d error %q, want %q", line, res.errs[line], text)
		}
	}
}

func TestDefaultTenantAndStop(t *testing.T) {
	var got []Item
	stop := errors.New("stop")
	err := Read(strings.NewReader("iccid\n89860318640220133897\n8901260886258128535\n"), CSV, "acme", func(it Item, err error) error {
		got = append(got, it)
		return stop
	})
	if !errors.Is(err, stop) || len(got) != 1 || got[0].Card.Tenant != "acme" {
		t.Errorf("err %v items %+v", err, got)
	}
	if err := Read(strings.NewReader(""), "xml", "", nil); err == nil {
		t.Error("unknown format accepted")
	}
}

func FuzzRead(f *testing.F) {
	f.Add([]byte("iccid,tenant,imei\n89860318640220133897,acme,356938035643809\n"), true)
	f.Add([]byte(`{"iccid":"89860318640220133897","tenant":"acme"}`+"\n"), false)
	f.Fuzz(func(t *testing.T, data []byte, csv bool) {
		format := NDJSON
		if csv {
			format = CSV
		}
		_ = Read(strings.NewReader(string(data)), format, "t", func(it Item, err error) error {
			if err == nil {
				if _, perr := protocol.ParseICCID(string(it.Card.ICCID)); perr != nil {
					t.Fatalf("accepted bad ICCID %q", it.Card.ICCID)
				}
			}
			return nil
		})
	})
}

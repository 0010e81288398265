// Package inventory reads card inventory files, CSV or NDJSON, one card
// per line, as an operator exports them. It streams: a file of millions of
// lines is read with constant memory, and a bad line yields an error for
// that line without stopping the rest.
//
// Columns (CSV header names, NDJSON keys):
//
//	iccid        required
//	tenant       required unless a default tenant is given
//	imsi, msisdn, nai                     optional inventory identifiers
//	imei         optional binding: one IMEI, or several separated by ';'
//	tac          optional binding: same-model TAC prefix
//	mode         optional binding: block (default) or alert
//	grace        optional binding: Go duration, e.g. 30s
//	auto_resume  optional binding: true (default) or false
package inventory

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
)

// Item is one parsed line.
type Item struct {
	Line int
	Card verifier.Card
	// Binding is set when the line carries binding columns.
	Binding *verifier.Binding
}

// LineError is a line that could not be read.
type LineError struct {
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }

// Unwrap returns the cause.
func (e *LineError) Unwrap() error { return e.Err }

// Format is the file format.
type Format string

// Formats.
const (
	CSV    Format = "csv"
	NDJSON Format = "ndjson"
)

// maxLine bounds one input line.
const maxLine = 64 << 10

// Read parses r and calls fn for every line, with the item or the line's
// error. fn returning an error stops reading and Read returns it.
// defaultTenant fills lines without a tenant.
func Read(r io.Reader, format Format, defaultTenant string, fn func(Item, error) error) error {
	switch format {
	case CSV:
		return readCSV(r, defaultTenant, fn)
	case NDJSON:
		return readNDJSON(r, defaultTenant, fn)
	}
	return fmt.Errorf("inventory: unknown format %q (want csv or ndjson)", format)
}

type record map[string]string

var columns = map[string]bool{"iccid": true, "tenant": true, "imsi": true, "msisdn": true, "nai": true,
	"imei": true, "tac": true, "mode": true, "grace": true, "auto_resume": true}

func readCSV(r io.Reader, defaultTenant string, fn func(Item, error) error) error {
	cr := csv.NewReader(bufio.NewReaderSize(r, maxLine))
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err != nil {
		return fmt.Errorf("inventory: csv header: %w", err)
	}
	names := make([]string, len(header))
	seen := map[string]bool{}
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
		if !columns[h] {
			return fmt.Errorf("inventory: csv header: unknown column %q", h)
		}
		if seen[h] {
			return fmt.Errorf("inventory: csv header: column %q twice", h)
		}
		seen[h] = true
		names[i] = h
	}
	if !seen["iccid"] {
		return errors.New("inventory: csv header: no iccid column")
	}
	for {
		fields, err := cr.Read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				if ferr := fn(Item{Line: pe.Line}, &LineError{Line: pe.Line, Err: pe.Err}); ferr != nil {
					return ferr
				}
				continue
			}
			return fmt.Errorf("inventory: read: %w", err)
		}
		line, _ := cr.FieldPos(0)
		if len(fields) == 1 && strings.TrimSpace(fields[0]) == "" {
			continue // blank line
		}
		var item Item
		if len(fields) != len(names) {
			err = fmt.Errorf("has %d fields, the header has %d", len(fields), len(names))
		} else {
			rec := make(record, len(names))
			for i, n := range names {
				rec[n] = strings.TrimSpace(fields[i])
			}
			item, err = parse(rec, defaultTenant)
		}
		item.Line = line
		if err != nil {
			err = &LineError{Line: line, Err: err}
		}
		if ferr := fn(item, err); ferr != nil {
			return ferr
		}
	}
}

func readNDJSON(r io.Reader, defaultTenant string, fn func(Item, error) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		item, err := parseJSON(b, defaultTenant)
		item.Line = line
		if err != nil {
			err = &LineError{Line: line, Err: err}
		}
		if ferr := fn(item, err); ferr != nil {
			return ferr
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("inventory: line %d is longer than %d bytes", line+1, maxLine)
		}
		return fmt.Errorf("inventory: read: %w", err)
	}
	return nil
}

func parseJSON(b []byte, defaultTenant string) (Item, error) {
	var raw map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return Item{}, fmt.Errorf("not a JSON object: %v", err)
	}
	rec := record{}
	for k, v := range raw {
		if !columns[k] {
			return Item{}, fmt.Errorf("unknown field %q", k)
		}
		switch v := v.(type) {
		case string:
			rec[k] = strings.TrimSpace(v)
		case bool:
			rec[k] = strconv.FormatBool(v)
		case json.Number:
			return Item{}, fmt.Errorf("field %q: write identifiers as strings (a number loses leading zeros and digits)", k)
		case []any:
			if k != "imei" {
				return Item{}, fmt.Errorf("field %q: want a string", k)
			}
			parts := make([]string, len(v))
			for i, p := range v {
				s, ok := p.(string)
				if !ok {
					return Item{}, fmt.Errorf("field imei: want strings")
				}
				parts[i] = s
			}
			rec[k] = strings.Join(parts, ";")
		case nil:
		default:
			return Item{}, fmt.Errorf("field %q: want a string", k)
		}
	}
	return parse(rec, defaultTenant)
}

// parse validates one record and builds the item.
func parse(rec record, defaultTenant string) (Item, error) {
	var it Item
	var err error
	if rec["iccid"] == "" {
		return it, errors.New("iccid: required")
	}
	if it.Card.ICCID, err = protocol.ParseICCID(rec["iccid"]); err != nil {
		return it, err
	}
	it.Card.Tenant = rec["tenant"]
	if it.Card.Tenant == "" {
		it.Card.Tenant = defaultTenant
	}
	if it.Card.Tenant == "" {
		return it, errors.New("tenant: required")
	}
	if err := protocol.ValidateID("tenant", it.Card.Tenant); err != nil {
		return it, err
	}
	if v := rec["imsi"]; v != "" {
		if it.Card.IMSI, err = protocol.ParseIMSI(v); err != nil {
			return it, err
		}
	}
	if v := rec["msisdn"]; v != "" {
		if it.Card.MSISDN, err = protocol.NormalizeMSISDN(v); err != nil {
			return it, err
		}
	}
	if v := rec["nai"]; v != "" {
		if len(v) > 253 || !strings.Contains(v, "@") {
			return it, fmt.Errorf("nai %q: want user@realm", v)
		}
		it.Card.NAI = v
	}
	if rec["imei"] == "" && rec["tac"] == "" && rec["mode"] == "" && rec["grace"] == "" && rec["auto_resume"] == "" {
		return it, nil
	}
	b := &verifier.Binding{Mode: verifier.ModeBlock, AutoResume: true}
	if v := rec["imei"]; v != "" {
		for _, s := range strings.Split(v, ";") {
			m, err := protocol.ParseIMEI(s)
			if err != nil {
				return it, err
			}
			b.IMEIs = append(b.IMEIs, m)
		}
	}
	if v := rec["tac"]; v != "" {
		if len(v) < 6 || len(v) > 8 || strings.Trim(v, "0123456789") != "" {
			return it, fmt.Errorf("tac %q: want 6 to 8 digits", v)
		}
		b.TAC = v
	}
	switch rec["mode"] {
	case "", "block":
	case "alert":
		b.Mode = verifier.ModeAlert
	default:
		return it, fmt.Errorf("mode %q: want block or alert", rec["mode"])
	}
	if v := rec["grace"]; v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > 7*24*time.Hour {
			return it, fmt.Errorf("grace %q: want a duration from 0s to 168h", v)
		}
		b.Grace = d
	}
	if v := rec["auto_resume"]; v != "" {
		ar, err := strconv.ParseBool(v)
		if err != nil {
			return it, fmt.Errorf("auto_resume %q: want true or false", v)
		}
		b.AutoResume = ar
	}
	it.Binding = b
	return it, nil
}

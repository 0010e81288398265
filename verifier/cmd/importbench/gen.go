package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"

	"github.com/cardbind/cardbind/protocol"
)

// benchTenant owns every generated card.
const benchTenant = "bench"

// cardLine returns line i of the generated file (0-based, after the
// header): a valid ICCID (Luhn check digit), IMSI, E.164 MSISDN and a
// one-IMEI binding; every tenth card alerts instead of blocking and every
// seventh has a grace period, so the file exercises the binding columns.
func cardLine(i int) string {
	iccid := protocol.WithCheckDigit(fmt.Sprintf("8986031%012d", i))
	imsi := fmt.Sprintf("46003%010d", i)
	msisdn := fmt.Sprintf("+86139%08d", i)
	// TAC (8 digits) + serial (6 digits) + check digit; the TAC's last two
	// digits carry i / 1e6 so every card's IMEI differs.
	imei := protocol.WithCheckDigit(fmt.Sprintf("356938%02d%06d", i/1_000_000, i%1_000_000))
	mode, grace := "block", ""
	if i%10 == 9 {
		mode = "alert"
	}
	if i%7 == 6 {
		grace = "30s"
	}
	return iccid + "," + benchTenant + "," + imsi + "," + msisdn + "," + imei + "," + mode + "," + grace + "\n"
}

// writeCSV writes n generated cards to path and returns the file's size.
func writeCSV(path string, n int) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, fmt.Errorf("generate: %w", err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	var size int64
	put := func(s string) error {
		size += int64(len(s))
		_, err := w.WriteString(s)
		return err
	}
	err = put("iccid,tenant,imsi,msisdn,imei,mode,grace\n")
	for i := 0; i < n && err == nil; i++ {
		err = put(cardLine(i))
	}
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("generate %s: %w", path, err)
	}
	return size, nil
}

// itoa is strconv.Itoa, for the report.
func itoa(n int) string { return strconv.Itoa(n) }

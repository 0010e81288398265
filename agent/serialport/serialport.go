// Package serialport opens a modem's serial device for the AT engine with
// go.bug.st/serial: 8N1 at the given baud rate, raw mode, and no modem
// control lines touched (pseudo-terminals and some USB serial drivers reject
// the DTR/RTS ioctls, so Mode.InitialStatusBits is never set).
package serialport

import (
	"context"
	"fmt"
	"io"

	"go.bug.st/serial"
)

// DefaultBaud is used when Open is given a baud rate of 0. USB modems ignore
// it; UART-attached modules usually default to 115200.
const DefaultBaud = 115200

// Open opens the serial device at path (a symlink is followed) with the given
// baud rate, and discards input that was waiting before the open.
func Open(path string, baud int) (io.ReadWriteCloser, error) {
	if baud <= 0 {
		baud = DefaultBaud
	}
	p, err := serial.Open(path, &serial.Mode{
		BaudRate: baud,
		DataBits: 8,
		Parity:   serial.NoParity,
		StopBits: serial.OneStopBit,
		// InitialStatusBits stays nil: no modem control ioctls.
	})
	if err != nil {
		return nil, fmt.Errorf("serialport: open %s: %w", path, err)
	}
	_ = p.ResetInputBuffer() // best effort: stale boot output is not ours
	return p, nil
}

// Opener returns a function that opens path at baud, in the shape that
// at.SupervisorConfig.Open expects.
func Opener(path string, baud int) func(context.Context) (io.ReadWriteCloser, error) {
	return func(ctx context.Context) (io.ReadWriteCloser, error) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return Open(path, baud)
	}
}

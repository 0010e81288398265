package modem_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/cardbind/cardbind/firmware-sim/modem"
	"github.com/cardbind/cardbind/firmware-sim/network"
)

// A modem served in process over net.Pipe, attached to an in-memory network.
func ExampleModem_Serve() {
	operator := network.New(network.Options{})
	m, err := modem.New(modem.Config{
		Personality: "generic",
		IMEI:        "356938035643809",
		SIM:         &modem.SIM{ICCID: "89860318640220133897", IMSI: "460031234567890"},
		Network:     operator,
	})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	dte, dce := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx, dce) }()

	r := bufio.NewReader(dte)
	ask := func(cmd string) {
		fmt.Fprint(dte, cmd+"\r")
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				panic(err)
			}
			line = strings.TrimSpace(line)
			if line != "" {
				fmt.Println(line)
			}
			if line == "OK" || strings.Contains(line, "ERROR") {
				return
			}
		}
	}
	ask("ATE0")
	ask("AT+CGSN;+CCID")

	cancel()
	<-done
	dte.Close()
	// Output:
	// ATE0
	// OK
	// 356938035643809
	// +CCID: 89860318640220133897
	// OK
}

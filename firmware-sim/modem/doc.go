// Package modem simulates a cellular modem that speaks AT commands, for tests
// and demos of cardbind.
//
// A Modem holds the device state (IMEI, SIM card, registration, V.250
// settings) and answers AT command lines written to it over any byte stream
// (see Modem.Serve). Personalities ("generic", "quectel", "simcom", "ublox")
// change the vendor surface: identification strings, the ICCID command, boot
// and SIM hot-swap unsolicited result codes (URCs) and a few quirks.
//
// Serve works over any io.ReadWriter, so tests can run many modems in one
// process without pseudo-terminals (see the example of Modem.Serve); with a
// Network (network.Network in process, network.Client over HTTP) the SIM
// attaches to a simulated operator and registration follows blocks and
// resumes. Faults (delays, silence, garbage, spurious URCs, errors) can be
// injected with Modem.SetFaults.
//
// The simulator is written independently of the cardbind agent's AT engine on
// purpose: it must behave like the outside world, so it shares no code with it.
//
// The pseudo-terminal host lives in package ptyhost and the HTTP control API
// in package control; this package does no terminal or HTTP work itself.
package modem

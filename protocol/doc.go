// Package protocol is the contract between the cardbind agent and the
// cardbind verifier: identifier types (IMEI, IMEISV, ICCID, IMSI, MSISDN)
// with parsing, normalisation and check digits; the versioned JSON messages
// (the agent's report, the verifier's command, the alert published to
// subscribers, the enrolment exchange); the MQTT topic layout; and report
// signing with Ed25519.
//
// The package does no I/O and imports only the standard library, so both the
// agent (flashed onto small gateways) and the verifier can depend on it.
package protocol

package protocol

import (
	"encoding/json"
	"time"
)

const commandMsg = "command"

// Command is what the verifier publishes on a device's command topic. It is
// signed with the verifier's command key, so a device acts only on commands
// the verifier sent.
type Command struct {
	Version  int         `json:"v"`
	ID       string      `json:"id"`
	DeviceID string      `json:"device_id"`
	Kind     CommandKind `json:"kind"`
	Issued   time.Time   `json:"issued"`
	// Expires is when the command goes stale; a device ignores it after.
	Expires time.Time `json:"expires"`
	Sig     []byte    `json:"sig"`
}

// EncodeCommand returns the JSON wire form of c.
func EncodeCommand(c *Command) ([]byte, error) { return json.Marshal(c) }

// DecodeCommand parses and validates a command. It does not check the
// signature; see VerifyCommand.
func DecodeCommand(data []byte) (*Command, error) {
	var c Command
	if err := decodeStrict(commandMsg, data, &c, &c.Version); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks every field of the command.
func (c *Command) Validate() error {
	const m = commandMsg
	switch {
	case c.Version != Version:
		return fieldErr(m, "v", "version %d is not supported (want %d)", c.Version, Version)
	case c.ID == "":
		return fieldErr(m, "id", "required")
	case !validID(c.ID):
		return fieldErr(m, "id", "want 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'")
	case c.DeviceID == "":
		return fieldErr(m, "device_id", "required")
	case !validID(c.DeviceID):
		return fieldErr(m, "device_id", "want 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'")
	case c.Kind == "":
		return fieldErr(m, "kind", "required")
	case !c.Kind.valid():
		return fieldErr(m, "kind", "%q is not one of report_now, radio_off, radio_on", c.Kind)
	case c.Issued.IsZero():
		return fieldErr(m, "issued", "required")
	case c.Expires.IsZero():
		return fieldErr(m, "expires", "required")
	case !c.Expires.After(c.Issued):
		return fieldErr(m, "expires", "must be after issued")
	case len(c.Sig) == 0:
		return fieldErr(m, "sig", "required")
	case len(c.Sig) != SignatureSize:
		return fieldErr(m, "sig", "has %d bytes, want %d", len(c.Sig), SignatureSize)
	}
	return nil
}

package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Version is the message version this package writes and reads.
const Version = 1

// MaxMessageSize bounds every message on the wire. Larger messages are
// refused before they are parsed.
const MaxMessageSize = 16 << 10

// ErrInvalidMessage is wrapped by every decoding error, so callers can count
// malformed messages with errors.Is.
var ErrInvalidMessage = errors.New("invalid message")

// FieldError says which field of which message was wrong, and why.
type FieldError struct {
	Message string // "report", "command", "alert", "enroll request", ...
	Field   string // JSON field path, such as "registration.stat"; empty for the whole message
	Reason  string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s: %s", e.Message, e.Reason)
	}
	return fmt.Sprintf("%s: field %q: %s", e.Message, e.Field, e.Reason)
}

// Unwrap makes every FieldError match ErrInvalidMessage.
func (e *FieldError) Unwrap() error { return ErrInvalidMessage }

func fieldErr(msg, field, format string, args ...any) error {
	return &FieldError{Message: msg, Field: field, Reason: fmt.Sprintf(format, args...)}
}

// decodeStrict decodes one JSON object into v, refusing oversized input,
// unknown fields, wrong types and trailing data, and names the field at
// fault. version points at v's "v" field: a message whose version is not
// Version gets a version error rather than any other (an unknown field of
// a later version, say). The version is looked at on its own only when
// the strict decode fails or finds another version, so a well-formed
// message is parsed once.
func decodeStrict(msg string, data []byte, v any, version *int) error {
	if len(data) > MaxMessageSize {
		return fieldErr(msg, "", "%d bytes is over the %d-byte limit", len(data), MaxMessageSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if verr := checkVersion(msg, data); verr != nil {
			return verr
		}
		return jsonErr(msg, err)
	}
	if *version != Version {
		if err := checkVersion(msg, data); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != io.EOF {
		return fieldErr(msg, "", "trailing data after the JSON object")
	}
	return nil
}

// checkVersion reads only the "v" field, so a message of another version
// gets a version error rather than an unknown-field error.
func checkVersion(msg string, data []byte) error {
	var head struct {
		V *json.RawMessage `json:"v"`
	}
	if err := json.NewDecoder(bytes.NewReader(data)).Decode(&head); err != nil {
		return jsonErr(msg, err)
	}
	if head.V == nil {
		return fieldErr(msg, "v", "required")
	}
	var v int
	if err := json.Unmarshal(*head.V, &v); err != nil {
		return fieldErr(msg, "v", "must be an integer")
	}
	if v != Version {
		return fieldErr(msg, "v", "version %d is not supported (want %d)", v, Version)
	}
	return nil
}

func jsonErr(msg string, err error) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		return fieldErr(msg, typeErr.Field, "must be %s, not %s", typeName(typeErr.Type.Kind().String()), typeErr.Value)
	case errors.As(err, &syntaxErr):
		return fieldErr(msg, "", "malformed JSON at byte %d: %v", syntaxErr.Offset, err)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return fieldErr(msg, name, "unknown field")
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fieldErr(msg, "", "truncated JSON")
	}
	return fieldErr(msg, "", "%v", err)
}

func typeName(kind string) string {
	switch kind {
	case "int", "int64", "uint64", "uint32", "int32", "uint":
		return "an integer"
	case "float64":
		return "a number"
	case "string":
		return "a string"
	case "struct", "map":
		return "an object"
	case "slice":
		return "an array"
	case "bool":
		return "a boolean"
	}
	return kind
}

// validID reports whether id is usable as a device or tenant id: 1 to 64
// characters from [A-Za-z0-9_-]. The set keeps ids safe in MQTT topics and
// NATS subjects (no '.', ' ', '/', '+', '#', '*' or '>').
func validID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ValidateID returns an error naming kind ("device id", "tenant id") when
// id is not 1 to 64 characters from [A-Za-z0-9_-].
func ValidateID(kind, id string) error {
	if !validID(id) {
		return fmt.Errorf("%s %q: want 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-': %w", kind, truncate(id, 70), ErrInvalidIdentifier)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// checkIdent checks that a typed identifier is in its normalised form.
func checkIdent[T ~string](msg, field string, v T, parse func(string) (T, error), required bool) error {
	if v == "" {
		if required {
			return fieldErr(msg, field, "required")
		}
		return nil
	}
	got, err := parse(string(v))
	if err != nil {
		var ie *IdentifierError
		if errors.As(err, &ie) {
			return fieldErr(msg, field, "%s", ie.Reason)
		}
		return fieldErr(msg, field, "%v", err)
	}
	if got != v {
		return fieldErr(msg, field, "not in normalised form (want %q)", string(got))
	}
	return nil
}

package protocol

import (
	"crypto/ed25519"
	"encoding/json"
	"net/url"
)

// EnrollPath is the verifier's HTTP path where an agent enrols: it POSTs an
// EnrollRequest as JSON and gets an EnrollResponse back.
const EnrollPath = "/v1/enroll"

const (
	enrollReqMsg  = "enroll request"
	enrollRespMsg = "enroll response"
)

// EnrollRequest is what an agent sends once, at installation, to register
// the public half of the key it just created on the device.
type EnrollRequest struct {
	Version int `json:"v"`
	// Token is the one-time enrolment token an operator issued.
	Token string `json:"token"`
	// PublicKey is the device's Ed25519 public key (32 bytes; base64 in JSON).
	PublicKey []byte `json:"public_key"`
	// IMEI is the modem's IMEI at enrolment; later reports with another
	// IMEI are flagged.
	IMEI         IMEI   `json:"imei"`
	ICCID        ICCID  `json:"iccid,omitempty"`
	Hostname     string `json:"hostname,omitempty"`
	AgentVersion string `json:"agent_version,omitempty"`
}

// EnrollResponse gives the agent its identity and its broker credentials.
type EnrollResponse struct {
	Version  int    `json:"v"`
	DeviceID string `json:"device_id"`
	Tenant   string `json:"tenant"`
	// BrokerURL is the MQTT broker address, "tcp://host:port" or
	// "ssl://host:port".
	BrokerURL    string `json:"broker_url"`
	Username     string `json:"username"`
	Password     string `json:"password"`
	ReportTopic  string `json:"report_topic"`
	CommandTopic string `json:"command_topic"`
	// CommandKey is the verifier's Ed25519 public key that signs commands.
	CommandKey []byte `json:"command_key"`
	// CACertPEM, when set, is the CA that signs the broker's certificate.
	CACertPEM string `json:"ca_cert_pem,omitempty"`
}

// DecodeEnrollRequest parses and validates an enrolment request.
func DecodeEnrollRequest(data []byte) (*EnrollRequest, error) {
	var r EnrollRequest
	if err := decodeStrict(enrollReqMsg, data, &r, &r.Version); err != nil {
		return nil, err
	}
	const m = enrollReqMsg
	switch {
	case r.Token == "":
		return nil, fieldErr(m, "token", "required")
	case len(r.Token) > 256:
		return nil, fieldErr(m, "token", "longer than 256 characters")
	case len(r.PublicKey) == 0:
		return nil, fieldErr(m, "public_key", "required")
	case len(r.PublicKey) != ed25519.PublicKeySize:
		return nil, fieldErr(m, "public_key", "has %d bytes, want %d", len(r.PublicKey), ed25519.PublicKeySize)
	case len(r.Hostname) > 255:
		return nil, fieldErr(m, "hostname", "longer than 255 characters")
	case len(r.AgentVersion) > 64:
		return nil, fieldErr(m, "agent_version", "longer than 64 characters")
	}
	if err := checkIdent(m, "imei", r.IMEI, ParseIMEI, true); err != nil {
		return nil, err
	}
	if err := checkIdent(m, "iccid", r.ICCID, ParseICCID, false); err != nil {
		return nil, err
	}
	return &r, nil
}

// DecodeEnrollResponse parses and validates an enrolment response.
func DecodeEnrollResponse(data []byte) (*EnrollResponse, error) {
	var r EnrollResponse
	if err := decodeStrict(enrollRespMsg, data, &r, &r.Version); err != nil {
		return nil, err
	}
	const m = enrollRespMsg
	switch {
	case !validID(r.DeviceID):
		return nil, fieldErr(m, "device_id", "want 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'")
	case !validID(r.Tenant):
		return nil, fieldErr(m, "tenant", "want 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'")
	case r.Username == "":
		return nil, fieldErr(m, "username", "required")
	case r.Password == "":
		return nil, fieldErr(m, "password", "required")
	case r.ReportTopic != ReportTopic(r.DeviceID):
		return nil, fieldErr(m, "report_topic", "want %q", ReportTopic(r.DeviceID))
	case r.CommandTopic != CommandTopic(r.DeviceID):
		return nil, fieldErr(m, "command_topic", "want %q", CommandTopic(r.DeviceID))
	case len(r.CommandKey) != ed25519.PublicKeySize:
		return nil, fieldErr(m, "command_key", "has %d bytes, want %d", len(r.CommandKey), ed25519.PublicKeySize)
	}
	u, err := url.Parse(r.BrokerURL)
	if err != nil || (u.Scheme != "tcp" && u.Scheme != "ssl" && u.Scheme != "tls" && u.Scheme != "mqtt" && u.Scheme != "mqtts") || u.Host == "" {
		return nil, fieldErr(m, "broker_url", "want tcp://host:port or ssl://host:port")
	}
	return &r, nil
}

// EncodeEnrollRequest returns the JSON wire form of r.
func EncodeEnrollRequest(r *EnrollRequest) ([]byte, error) { return json.Marshal(r) }

// EncodeEnrollResponse returns the JSON wire form of r.
func EncodeEnrollResponse(r *EnrollResponse) ([]byte, error) { return json.Marshal(r) }

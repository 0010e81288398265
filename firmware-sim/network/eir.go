package network

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// EIRClient asks an equipment identity register over HTTP in the style of
// 3GPP TS 29.511 (N5g-eir_EquipmentIdentityCheck):
//
//	GET {base}/n5g-eir-eic/v1/equipment-status?pei=imeisv-...&supi=imsi-...&gpsi=msisdn-...
//
// and reads {"status": "WHITELISTED" | "BLACKLISTED" | "GREYLISTED"}.
type EIRClient struct {
	base string
	hc   *http.Client
}

var _ EquipmentChecker = (*EIRClient)(nil)

// NewEIRClient returns a client of the EIR at baseURL, e.g.
// "http://127.0.0.1:8080". A nil hc means a client with a 5 s timeout.
func NewEIRClient(baseURL string, hc *http.Client) *EIRClient {
	if hc == nil {
		hc = &http.Client{Timeout: 5 * time.Second}
	}
	return &EIRClient{base: strings.TrimRight(baseURL, "/"), hc: hc}
}

// CheckEquipment asks for the status of the equipment q.IMEI (sent as its
// IMEISV, as an AMF does) with the subscription q.IMSI and q.MSISDN. An
// answer other than 200 with a known status is an error.
func (c *EIRClient) CheckEquipment(ctx context.Context, q EquipmentQuery) (string, error) {
	v := url.Values{"pei": {pei(q.IMEI)}}
	if q.IMSI != "" {
		v.Set("supi", "imsi-"+q.IMSI)
	}
	if q.MSISDN != "" {
		v.Set("gpsi", "msisdn-"+strings.TrimPrefix(q.MSISDN, "+"))
	}
	u := c.base + "/n5g-eir-eic/v1/equipment-status?" + v.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", fmt.Errorf("network: EIR: %w", err)
	}
	req.Header.Set("Accept", "application/json, application/problem+json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("network: EIR: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return "", fmt.Errorf("network: EIR: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var p struct {
			Title  string `json:"title"`
			Detail string `json:"detail"`
			Cause  string `json:"cause"`
		}
		_ = json.Unmarshal(raw, &p)
		return "", fmt.Errorf("network: EIR: HTTP %d %s: %s %s", resp.StatusCode, p.Cause, p.Title, p.Detail)
	}
	var out struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return "", fmt.Errorf("network: EIR: decode answer: %w", err)
	}
	switch out.Status {
	case EquipmentWhitelisted, EquipmentBlacklisted, EquipmentGreylisted:
		return out.Status, nil
	}
	return "", fmt.Errorf("network: EIR: unknown status %q", out.Status)
}

// pei names the equipment as TS 29.571 does: imeisv-<16 digits> when the
// network knows the software version, imei-<15 digits> otherwise. The
// simulated network reports the IMEISV (see imeisv).
func pei(imei string) string {
	if sv := imeisv(imei); len(sv) == 16 {
		return "imeisv-" + sv
	}
	return "imei-" + imei
}

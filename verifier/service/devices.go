package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
)

// DeviceView is an enrolled device as operators see it: no secrets.
type DeviceView struct {
	ID        string         `json:"id"`
	Tenant    string         `json:"tenant"`
	IMEI      protocol.IMEI  `json:"imei"`
	LastIMEI  protocol.IMEI  `json:"last_imei,omitempty"`
	LastICCID protocol.ICCID `json:"last_iccid,omitempty"`
	LastSeq   uint64         `json:"last_seq"`
	PublicKey []byte         `json:"public_key"`
	Enrolled  time.Time      `json:"enrolled"`
	// Flagged is set when the device reports an IMEI other than the one
	// it enrolled with (module swapped or IMEI rewritten).
	Flagged bool `json:"flagged"`
}

// Device returns an enrolled device. With tenant set, another tenant's
// device is verifier.ErrNotFound.
func (s *Service) Device(ctx context.Context, tenant, id string) (*DeviceView, error) {
	if protocol.ValidateID("device id", id) != nil {
		return nil, fmt.Errorf("device %q: %w", id, verifier.ErrNotFound)
	}
	d, err := s.store.Device(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", id, err)
	}
	if tenant != "" && d.Tenant != tenant {
		return nil, fmt.Errorf("device %s: %w", id, verifier.ErrNotFound)
	}
	return &DeviceView{ID: d.ID, Tenant: d.Tenant, IMEI: d.IMEI, LastIMEI: d.LastIMEI, LastICCID: d.LastICCID,
		LastSeq: d.LastSeq, PublicKey: d.PublicKey, Enrolled: d.Enrolled,
		Flagged: d.LastIMEI != "" && d.LastIMEI != d.IMEI}, nil
}

// Command lifetimes: how long a device may act on a command after it was
// issued.
const (
	DefaultCommandTTL = 5 * time.Minute
	maxCommandTTL     = 24 * time.Hour
)

// SendCommand signs a command for a device with the verifier's command key
// and publishes it on the device's command topic. Commands are advisory:
// a device that is offline misses it (it reports again when it comes
// back). The agent acknowledges it in its next report.
func (s *Service) SendCommand(ctx context.Context, tenant, deviceID string, kind protocol.CommandKind, ttl time.Duration, actor string) (*protocol.Command, error) {
	if s.cfg.CommandKey == nil || s.cfg.PublishCommand == nil {
		return nil, errors.New("send command: this verifier has no command key or broker")
	}
	if ttl == 0 {
		ttl = DefaultCommandTTL
	}
	if ttl < time.Second || ttl > maxCommandTTL {
		return nil, fmt.Errorf("%w: command ttl must be between 1s and 24h", ErrInvalid)
	}
	if _, err := s.Device(ctx, tenant, deviceID); err != nil {
		return nil, err
	}
	now := s.now().UTC()
	c := &protocol.Command{Version: protocol.Version, ID: "cmd-" + randomHex(8), DeviceID: deviceID, Kind: kind,
		Issued: now, Expires: now.Add(ttl)}
	protocol.SignCommand(s.cfg.CommandKey, c)
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	payload, err := protocol.EncodeCommand(c)
	if err != nil {
		return nil, fmt.Errorf("send command: %w", err)
	}
	if err := s.cfg.PublishCommand(ctx, deviceID, payload); err != nil {
		return nil, fmt.Errorf("send command %s to %s: %w", c.ID, deviceID, err)
	}
	s.log.Info("command sent", "device", deviceID, "kind", kind, "id", c.ID, "actor", actor)
	return c, nil
}

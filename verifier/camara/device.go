package camara

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"github.com/cardbind/cardbind/verifier"
)

// Device identifier names, as the CAMARA Device object spells them.
const (
	IdentPhoneNumber = "phoneNumber"
	IdentNAI         = "networkAccessIdentifier"
	IdentIPv4        = "ipv4Address"
	IdentIPv6        = "ipv6Address"
)

// identOrder is the order in which the identifiers of a device object are
// tried: the first supported one is the one used.
var identOrder = [...]string{IdentPhoneNumber, IdentNAI, IdentIPv4, IdentIPv6}

var phonePattern = regexp.MustCompile(`^\+[1-9][0-9]{4,14}$`)

// device is a validated CAMARA Device object.
type device struct {
	raw map[string]json.RawMessage
	// lookups holds, per identifier present, the index and value that
	// find the card.
	lookups map[string]lookup
}

type lookup struct {
	by    verifier.IndexKind
	value string
}

const msgNoIdentifier = "At least one of phoneNumber, networkAccessIdentifier, ipv4Address and ipv6Address must be specified"

// parseDevice validates a device object against the Device schema: any
// malformed identifier is 400 INVALID_ARGUMENT, whether or not it would
// be used.
func parseDevice(data json.RawMessage) (*device, *apiError) {
	var raw map[string]json.RawMessage
	if bytes.Equal(bytes.TrimSpace(data), []byte("null")) || json.Unmarshal(data, &raw) != nil {
		return nil, errInvalidArgument("Invalid format: device")
	}
	if len(raw) == 0 {
		return nil, errInvalidArgument(msgNoIdentifier)
	}
	d := &device{raw: raw, lookups: map[string]lookup{}}
	for k, v := range raw {
		var l lookup
		var e *apiError
		switch k {
		case IdentPhoneNumber:
			l, e = parsePhone(v)
		case IdentNAI:
			l, e = parseNAI(v)
		case IdentIPv4:
			l, e = parseIPv4(v)
		case IdentIPv6:
			l, e = parseIPv6(v)
		default:
			return nil, errInvalidArgument("Unknown property: device." + k)
		}
		if e != nil {
			return nil, e
		}
		d.lookups[k] = l
	}
	return d, nil
}

// pick returns the identifier used: the first one, in identOrder, that
// the deployment supports. None: 422 UNSUPPORTED_IDENTIFIER.
func (d *device) pick(disabled map[string]bool) (string, lookup, *apiError) {
	for _, k := range identOrder {
		if l, ok := d.lookups[k]; ok && !disabled[k] {
			return k, l, nil
		}
	}
	return "", lookup{}, errUnsupportedIdent
}

func jsonString(v json.RawMessage) (string, bool) {
	var s string
	return s, json.Unmarshal(v, &s) == nil
}

func parsePhone(v json.RawMessage) (lookup, *apiError) {
	s, ok := jsonString(v)
	if !ok || len(s) > 16 || !phonePattern.MatchString(s) {
		return lookup{}, errInvalidArgument("Invalid format: phoneNumber")
	}
	return lookup{verifier.ByMSISDN, s}, nil
}

// parseNAI accepts {LocalId}@{DomainId}: both parts non-empty, printable
// ASCII without spaces, at most 2048 characters in all.
func parseNAI(v json.RawMessage) (lookup, *apiError) {
	s, ok := jsonString(v)
	at := strings.LastIndexByte(s, '@')
	if !ok || len(s) > 2048 || at <= 0 || at == len(s)-1 || strings.IndexFunc(s, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0 {
		return lookup{}, errInvalidArgument("Invalid format: networkAccessIdentifier")
	}
	return lookup{verifier.ByNAI, s}, nil
}

func parseIPv4Addr(v json.RawMessage) (netip.Addr, bool) {
	s, ok := jsonString(v)
	if !ok {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	return a, err == nil && a.Is4()
}

// parseIPv4 validates DeviceIpv4Addr: publicAddress with publicPort or
// privateAddress. The card is found by privateAddress when given (the
// address the network allocated), else by publicAddress (which is the
// allocated address when no NAT is in the way); the port is not used.
func parseIPv4(v json.RawMessage) (lookup, *apiError) {
	bad := errInvalidArgument("Invalid format: ipv4Address")
	var raw map[string]json.RawMessage
	if json.Unmarshal(v, &raw) != nil || raw == nil {
		return lookup{}, bad
	}
	var pub, priv netip.Addr
	hasPort := false
	for k, f := range raw {
		var ok bool
		switch k {
		case "publicAddress":
			pub, ok = parseIPv4Addr(f)
		case "privateAddress":
			priv, ok = parseIPv4Addr(f)
		case "publicPort":
			p, isInt := intValue(f)
			if !isInt || p < 0 || p > 65535 {
				return lookup{}, errInvalidArgument("Invalid value: ipv4Address.publicPort")
			}
			ok, hasPort = true, true
		}
		if !ok {
			return lookup{}, bad
		}
	}
	if !pub.IsValid() || !priv.IsValid() && !hasPort {
		return lookup{}, bad
	}
	if priv.IsValid() {
		return lookup{verifier.ByIPv4, priv.String()}, nil
	}
	return lookup{verifier.ByIPv4, pub.String()}, nil
}

// ipv6PrefixLen is the prefix an IPv6 device address is matched by: the
// /64 a mobile network assigns to one PDU session (3GPP TS 23.501 §5.8.2.2),
// which the store indexes in CIDR form.
const ipv6PrefixLen = 64

func parseIPv6(v json.RawMessage) (lookup, *apiError) {
	s, ok := jsonString(v)
	a, err := netip.ParseAddr(s)
	if !ok || err != nil || !a.Is6() || a.Zone() != "" {
		return lookup{}, errInvalidArgument("Invalid format: ipv6Address")
	}
	return lookup{verifier.ByIPv6, netip.PrefixFrom(a, ipv6PrefixLen).Masked().String()}, nil
}

// intValue parses a JSON integer; strings, fractions and exponents are
// not integers.
func intValue(raw json.RawMessage) (int64, bool) {
	n, err := strconv.ParseInt(string(bytes.TrimSpace(raw)), 10, 64)
	return n, err == nil
}

// response returns the DeviceResponse: the one identifier used, as sent.
func (d *device) response(ident string) map[string]json.RawMessage {
	return map[string]json.RawMessage{ident: d.raw[ident]}
}

// validIdentifier reports whether name is an identifier name.
func validIdentifier(name string) error {
	for _, k := range identOrder {
		if k == name {
			return nil
		}
	}
	return fmt.Errorf("camara: unknown device identifier %q (want one of %s)", name, strings.Join(identOrder[:], ", "))
}

package protocol

import (
	"strings"
	"testing"
)

func TestTopics(t *testing.T) {
	if got := ReportTopic("gw-1"); got != "cardbind/v1/devices/gw-1/report" {
		t.Errorf("ReportTopic = %q", got)
	}
	if got := CommandTopic("gw-1"); got != "cardbind/v1/devices/gw-1/command" {
		t.Errorf("CommandTopic = %q", got)
	}
	if got := StatusTopic("gw-1"); got != "cardbind/v1/devices/gw-1/status" {
		t.Errorf("StatusTopic = %q", got)
	}
	if got := AlertTopic("acme", AlertBlocked); got != "cardbind/v1/tenants/acme/alerts/blocked" {
		t.Errorf("AlertTopic = %q", got)
	}
	if got := AlertFilter("acme"); got != "cardbind/v1/tenants/acme/alerts/+" {
		t.Errorf("AlertFilter = %q", got)
	}
	for _, tp := range []string{ReportTopic("x"), CommandTopic("x"), AlertTopic("x", AlertLearned), ReportFilter} {
		if strings.ContainsAny(tp, ". #") {
			t.Errorf("topic %q holds a character nats-server maps specially", tp)
		}
	}
}

func TestParseTopics(t *testing.T) {
	dev, err := ParseReportTopic("cardbind/v1/devices/gw-9/report")
	if err != nil || dev != "gw-9" {
		t.Errorf("ParseReportTopic = %q, %v", dev, err)
	}
	dev, err = ParseCommandTopic(CommandTopic("gw_9"))
	if err != nil || dev != "gw_9" {
		t.Errorf("ParseCommandTopic = %q, %v", dev, err)
	}
	tenant, typ, err := ParseAlertTopic(AlertTopic("acme", AlertResumed))
	if err != nil || tenant != "acme" || typ != AlertResumed {
		t.Errorf("ParseAlertTopic = %q %q %v", tenant, typ, err)
	}
	for _, bad := range []string{
		"", "cardbind/v1/devices/gw-9/command", "cardbind/v1/devices//report",
		"cardbind/v2/devices/gw-9/report", "cardbind/v1/devices/gw.9/report",
		"cardbind/v1/devices/+/report", "/cardbind/v1/devices/gw-9/report",
		"cardbind/v1/devices/gw-9/report/extra",
	} {
		if _, err := ParseReportTopic(bad); err == nil {
			t.Errorf("ParseReportTopic(%q) accepted", bad)
		}
	}
	for _, bad := range []string{"cardbind/v1/tenants/acme/alerts/party", "cardbind/v1/tenants/a#/alerts/blocked", "cardbind/v1/tenants/acme/alert/blocked"} {
		if _, _, err := ParseAlertTopic(bad); err == nil {
			t.Errorf("ParseAlertTopic(%q) accepted", bad)
		}
	}
}

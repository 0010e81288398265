package camara

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/cardbind/cardbind/protocol"
)

// TestBindUnbindQuery walks cards through the operations; each step is
// one request and the response it must get.
func TestBindUnbindQuery(t *testing.T) {
	e := newEnv(t, Config{DefaultAreaRadius: 3000})
	imei2, imei3 := imei(t, "86123456000001"), imei(t, "86123456000002")
	devA := `"device":{"phoneNumber":"` + phoneA + `"}`
	devB := `"device":{"phoneNumber":"` + phoneB + `"}`
	devD := `"device":{"ipv4Address":{"publicAddress":"` + ipv4PubA + `","publicPort":1}}` // card 4: unbound, no location
	area := `"limitArea":{"areaType":"CIRCLE","center":{"latitude":50.735851,"longitude":7.10066},"radius":50000}`
	steps := []struct {
		name, path, token, body string
		status                  int
		want                    string // JSON the body must equal (device member removed)
	}{
		{"query unbound imei", "/query", "acme", `{` + devA + `,"queryType":"IMEIBIND"}`, 200, `{"imeiBind":{"bindStatus":"UNBOUND"}}`},
		{"query unbound area", "/query", "acme", `{` + devA + `,"queryType":"AREALIMIT"}`, 200, `{"areaLimit":{"areaLimitStatus":"UNRESTRICTED"}}`},
		{"unbind unbound imei", "/unbind", "acme", `{` + devA + `,"unBindType":"IMEIBIND"}`, 422,
			`{"status":422,"code":"UNNECESSARY_UNBIND_IMEI","message":"The current device imei has been unbound"}`},
		{"unbind unbound area", "/unbind", "acme", `{` + devA + `,"unBindType":"AREALIMIT"}`, 422,
			`{"status":422,"code":"UNNECESSARY_UNBIND_AREALIMIT","message":"The current device area limit has been unbound"}`},
		{"area on a card without imei binding", "/bind", "acme", `{` + devA + `,"bindType":"AREALIMIT"}`, 200, `{"bound":false}`},

		{"bind to the imei it is in", "/bind", "acme", `{` + devA + `,"bindType":"IMEIBIND"}`, 200, `{"bound":true}`},
		{"query bound", "/query", "acme", `{` + devA + `,"queryType":"IMEIBIND"}`, 200,
			`{"imeiBind":{"bindImei":"` + e.imeiA + `","bindStatus":"BOUND","bindPolicy":{"alertOnly":false,"gracePeriod":0,"autoResume":true}}}`},
		{"three-legged query", "/query", "3leggedA", `{"queryType":"IMEIBIND"}`, 200,
			`{"imeiBind":{"bindImei":"` + e.imeiA + `","bindStatus":"BOUND","bindPolicy":{"alertOnly":false,"gracePeriod":0,"autoResume":true}}}`},
		{"area around last location", "/bind", "acme", `{` + devA + `,"bindType":"AREALIMIT"}`, 200, `{"bound":true}`},
		{"query area", "/query", "acme", `{` + devA + `,"queryType":"AREALIMIT"}`, 200,
			`{"areaLimit":{"limitArea":{"areaType":"CIRCLE","center":{"latitude":31.2304,"longitude":121.4737},"radius":3000},"areaLimitStatus":"RESTRICTED"}}`},
		{"rebinding the imei keeps the area", "/bind", "acme", `{` + devA + `,"bindType":"IMEIBIND","bindImei":"` + imei2 + `"}`, 200, `{"bound":true}`},
		{"area kept", "/query", "acme", `{` + devA + `,"queryType":"AREALIMIT"}`, 200,
			`{"areaLimit":{"limitArea":{"areaType":"CIRCLE","center":{"latitude":31.2304,"longitude":121.4737},"radius":3000},"areaLimitStatus":"RESTRICTED"}}`},
		{"explicit area", "/bind", "acme", `{` + devA + `,"bindType":"AREALIMIT",` + area + `}`, 200, `{"bound":true}`},
		{"query explicit area", "/query", "acme", `{` + devA + `,"queryType":"AREALIMIT"}`, 200,
			`{"areaLimit":{"limitArea":{"areaType":"CIRCLE","center":{"latitude":50.735851,"longitude":7.10066},"radius":50000},"areaLimitStatus":"RESTRICTED"}}`},
		{"imei kept", "/query", "acme", `{` + devA + `,"queryType":"IMEIBIND"}`, 200,
			`{"imeiBind":{"bindImei":"` + imei2 + `","bindStatus":"BOUND","bindPolicy":{"alertOnly":false,"gracePeriod":0,"autoResume":true}}}`},
		{"imei unbind refused while an area is set", "/unbind", "acme", `{` + devA + `,"unBindType":"IMEIBIND"}`, 200, `{"unbound":false}`},
		{"unbind area", "/unbind", "acme", `{` + devA + `,"unBindType":"AREALIMIT"}`, 200, `{"unbound":true}`},
		{"area gone", "/query", "acme", `{` + devA + `,"queryType":"AREALIMIT"}`, 200, `{"areaLimit":{"areaLimitStatus":"UNRESTRICTED"}}`},
		{"unbind area again", "/unbind", "acme", `{` + devA + `,"unBindType":"AREALIMIT"}`, 422,
			`{"status":422,"code":"UNNECESSARY_UNBIND_AREALIMIT","message":"The current device area limit has been unbound"}`},
		{"unbind imei", "/unbind", "3leggedA", `{"unBindType":"IMEIBIND"}`, 200, `{"unbound":true}`},
		{"unbind imei again", "/unbind", "3leggedA", `{"unBindType":"IMEIBIND"}`, 422,
			`{"status":422,"code":"UNNECESSARY_UNBIND_IMEI","message":"The current device imei has been unbound"}`},

		{"bind a never-seen card: learn the first imei", "/bind", "acme", `{` + devB + `,"bindType":"IMEIBIND"}`, 200, `{"bound":true}`},
		{"learning binding is bound without imei", "/query", "acme", `{` + devB + `,"queryType":"IMEIBIND"}`, 200,
			`{"imeiBind":{"bindStatus":"BOUND","bindPolicy":{"alertOnly":false,"gracePeriod":0,"autoResume":true}}}`},
		{"area with no known location", "/bind", "acme", `{` + devB + `,"bindType":"AREALIMIT"}`, 200, `{"bound":false}`},
		{"policy", "/bind", "acme", `{` + devB + `,"bindType":"IMEIBIND","bindImei":"` + protocol.IMEI(imei2).Dashed() + `",` +
			`"bindPolicy":{"imeis":["` + imei3 + `"],"tac":"35209900","alertOnly":true,"gracePeriod":300,"autoResume":false}}`, 200, `{"bound":true}`},
		{"query policy", "/query", "acme", `{` + devB + `,"queryType":"IMEIBIND"}`, 200,
			`{"imeiBind":{"bindImei":"` + imei2 + `","bindStatus":"BOUND","bindPolicy":{"imeis":["` + imei3 + `"],"tac":"35209900","alertOnly":true,"gracePeriod":300,"autoResume":false}}}`},
		{"bind by public ipv4", "/bind", "acme", `{` + devD + `,"bindType":"IMEIBIND","bindImei":"` + imei3 + `"}`, 200, `{"bound":true}`},

		{"bindImei bad check digit", "/bind", "acme", `{` + devA + `,"bindType":"IMEIBIND","bindImei":"352099001761480"}`, 400,
			`{"status":400,"code":"INVALID_ARGUMENT","message":"Invalid format: bindImei"}`},
		{"bindImei not a string", "/bind", "acme", `{` + devA + `,"bindType":"IMEIBIND","bindImei":352099001761481}`, 400,
			`{"status":400,"code":"INVALID_ARGUMENT","message":"Invalid format: bindImei"}`},
		{"policy unknown field", "/bind", "acme", `{` + devA + `,"bindType":"IMEIBIND","bindPolicy":{"mode":"x"}}`, 400,
			`{"status":400,"code":"INVALID_ARGUMENT","message":"Invalid format: bindPolicy"}`},
		{"policy bad imei", "/bind", "acme", `{` + devA + `,"bindType":"IMEIBIND","bindPolicy":{"imeis":["123"]}}`, 400,
			`{"status":400,"code":"INVALID_ARGUMENT","message":"Invalid format: bindPolicy.imeis"}`},
		{"policy bad tac", "/bind", "acme", `{` + devA + `,"bindType":"IMEIBIND","bindPolicy":{"tac":"35a"}}`, 400,
			`{"status":400,"code":"INVALID_ARGUMENT","message":"Invalid format: bindPolicy.tac"}`},
		{"policy grace too long", "/bind", "acme", `{` + devA + `,"bindType":"IMEIBIND","bindPolicy":{"gracePeriod":604801}}`, 400,
			`{"status":400,"code":"OUT_OF_RANGE","message":"Invalid value: bindPolicy.gracePeriod"}`},
		{"policy grace not integer", "/bind", "acme", `{` + devA + `,"bindType":"IMEIBIND","bindPolicy":{"gracePeriod":"300"}}`, 400,
			`{"status":400,"code":"INVALID_ARGUMENT","message":"Invalid format: bindPolicy.gracePeriod"}`},
		{"limitArea with IMEIBIND", "/bind", "acme", `{` + devA + `,"bindType":"IMEIBIND",` + area + `}`, 400,
			`{"status":400,"code":"INVALID_ARGUMENT","message":"limitArea applies to bindType AREALIMIT only"}`},
		{"bindImei with AREALIMIT", "/bind", "acme", `{` + devA + `,"bindType":"AREALIMIT","bindImei":"` + imei2 + `"}`, 400,
			`{"status":400,"code":"INVALID_ARGUMENT","message":"bindImei applies to bindType IMEIBIND only"}`},
		{"limitArea not a circle", "/bind", "acme", `{` + devA + `,"bindType":"AREALIMIT","limitArea":{"areaType":"POLYGON"}}`, 400,
			`{"status":400,"code":"INVALID_ARGUMENT","message":"Invalid format: limitArea"}`},
		{"limitArea radius 0", "/bind", "acme", `{` + devA + `,"bindType":"AREALIMIT","limitArea":{"areaType":"CIRCLE","center":{"latitude":1,"longitude":2},"radius":0}}`, 400,
			`{"status":400,"code":"OUT_OF_RANGE","message":"Invalid value: limitArea.radius"}`},
		{"limitArea radius too big", "/bind", "acme", `{` + devA + `,"bindType":"AREALIMIT","limitArea":{"areaType":"CIRCLE","center":{"latitude":1,"longitude":2},"radius":200001}}`, 400,
			`{"status":400,"code":"OUT_OF_RANGE","message":"Invalid value: limitArea.radius"}`},
		{"limitArea latitude out of range", "/bind", "acme", `{` + devA + `,"bindType":"AREALIMIT","limitArea":{"areaType":"CIRCLE","center":{"latitude":91,"longitude":2},"radius":10}}`, 400,
			`{"status":400,"code":"OUT_OF_RANGE","message":"Invalid value: limitArea.center"}`},
		{"bind extension on query", "/query", "acme", `{` + devA + `,"queryType":"IMEIBIND","bindImei":"` + imei2 + `"}`, 400,
			`{"status":400,"code":"INVALID_ARGUMENT","message":"Unknown property: bindImei"}`},
		{"other tenant cannot bind", "/bind", "other", `{` + devA + `,"bindType":"IMEIBIND"}`, 404,
			`{"status":404,"code":"IDENTIFIER_NOT_FOUND","message":"Device identifier not found."}`},
		{"other tenant cannot unbind", "/unbind", "other", `{` + devB + `,"unBindType":"IMEIBIND"}`, 404,
			`{"status":404,"code":"IDENTIFIER_NOT_FOUND","message":"Device identifier not found."}`},
	}
	for _, s := range steps {
		r := e.do(call{path: s.path, token: s.token, body: s.body})
		delete(r.body, "device")
		got, _ := json.Marshal(r.body)
		var want any
		if err := json.Unmarshal([]byte(s.want), &want); err != nil {
			t.Fatalf("%s: want %s: %v", s.name, s.want, err)
		}
		wantJSON, _ := json.Marshal(want)
		if r.status != s.status || string(got) != string(wantJSON) {
			t.Errorf("%s: got %d %s\n want %d %s", s.name, r.status, got, s.status, wantJSON)
		}
	}
	// The binding of card B is the policy asked for, and its history names the client.
	c, err := e.store.FindCard(context.Background(), "msisdn", phoneB)
	if err != nil {
		t.Fatal(err)
	}
	if b := c.Binding; b == nil || len(b.IMEIs) != 2 || b.TAC != "35209900" || b.Mode != "alert" || b.AutoResume || b.Grace.Seconds() != 300 ||
		b.CreatedBy[:7] != "camara:" {
		t.Errorf("binding = %+v", c.Binding)
	}
}

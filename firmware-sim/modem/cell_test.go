package modem

import (
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/cardbind/cardbind/firmware-sim/network"
)

// The serving cell as the registration and operator commands show it.
func TestCellAnswers(t *testing.T) {
	moved := &network.Cell{MCC: "310", MNC: "410", TAC: 0x5A1B, ECI: 0x1A2B301}
	tests := []struct {
		name string
		cell *network.Cell
		cmd  string
		want string
	}{
		{"default cell, CEREG", nil, "AT+CEREG=2;+CEREG?", info(`+CEREG: 2,1,"1A2B","01A2B3C4",7`) + ok},
		{"default cell, CREG and CGREG", nil, "AT+CREG=2;+CGREG=2;+CREG?;+CGREG?",
			info(`+CREG: 2,1,"1A2B","01A2B3C4",7`) + info(`+CGREG: 2,1,"1A2B","01A2B3C4",7`) + ok},
		{"default cell, numeric operator: the SIM's home", nil, "AT+COPS=3,2;+COPS?", info(`+COPS: 0,2,"46003",7`) + ok},
		{"default cell, long name", nil, "AT+COPS?", info(`+COPS: 0,0,"CHN-CT",7`) + ok},
		{"configured cell, CEREG", moved, "AT+CEREG=2;+CEREG?", info(`+CEREG: 2,1,"5A1B","01A2B301",7`) + ok},
		{"configured cell, numeric operator", moved, "AT+COPS=3,2;+COPS?", info(`+COPS: 0,2,"310410",7`) + ok},
		{"configured cell, short name of an unknown network", moved, "AT+COPS=3,1;+COPS?", info(`+COPS: 0,1,"310410",7`) + ok},
		{"mode 1 shows no location", moved, "AT+CEREG=1;+CEREG?", info("+CEREG: 1,1") + ok},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{Personality: "quectel", SIM: testSIM(), Cell: tt.cell})
			h.settle()
			h.send("ATE0\r")
			waitStat(t, h.m, 1)
			if got := h.send(tt.cmd + "\r"); got != tt.want {
				t.Errorf("%s: got %q, want %q", tt.cmd, got, tt.want)
			}
		})
	}
}

func TestNewRefusesBadCell(t *testing.T) {
	if _, err := New(Config{IMEI: testIMEI, Cell: &network.Cell{MCC: "46", MNC: "03"}}); err == nil {
		t.Error("New accepted a 2-digit MCC")
	}
}

// SetCell moves the modem: a URC with the new location to clients in
// mode 2, none in mode 1 or for the same cell.
func TestSetCellURCs(t *testing.T) {
	h := newHarness(t, Config{Personality: "quectel", SIM: testSIM()})
	h.settle()
	h.send("ATE0\r")
	h.send("AT+CEREG=2;+CREG=1\r")
	waitStat(t, h.m, 1)
	h.settle()
	if got := h.m.Cell(); got != (network.Cell{MCC: "460", MNC: "03", TAC: DefaultTAC, ECI: DefaultECI}) {
		t.Errorf("default cell %+v", got)
	}
	next := network.Cell{MCC: "460", MNC: "03", TAC: 0x1A2C, ECI: 0x01A2B3C5}
	if err := h.m.SetCell(next); err != nil {
		t.Fatal(err)
	}
	if got, want := h.settle(), info(`+CEREG: 1,"1A2C","01A2B3C5",7`); got != want {
		t.Errorf("after the move: %q, want %q", got, want)
	}
	if err := h.m.SetCell(next); err != nil {
		t.Fatal(err)
	}
	if got := h.settle(); got != "" {
		t.Errorf("the same cell again: %q", got)
	}
	if st := h.m.State(); st.Registration.Cell != next || st.Registration.Operator != "46003" {
		t.Errorf("state cell %+v operator %s", st.Registration.Cell, st.Registration.Operator)
	}
	if err := h.m.SetCell(network.Cell{MCC: "460", MNC: "03", ECI: 1 << 28}); err == nil {
		t.Error("SetCell accepted a 29-bit ECI")
	}
	// Not registered: the move shows in the next answer, not as a URC.
	h.send("AT+CFUN=4\r")
	waitStat(t, h.m, 0)
	h.settle()
	if err := h.m.SetCell(network.Cell{MCC: "460", MNC: "11", TAC: 1, ECI: 2}); err != nil {
		t.Fatal(err)
	}
	if got := h.settle(); got != "" {
		t.Errorf("move while not registered: %q", got)
	}
}

// sessionLog records what the network tells its session observer.
type sessionLog struct {
	mu     sync.Mutex
	events []string // "start", "update", "stop" with the cell
}

func (l *sessionLog) add(kind string, s network.Session) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cell := "none"
	if s.Cell != nil {
		cell = s.Cell.String()
	}
	l.events = append(l.events, kind+" "+cell)
}

func (l *sessionLog) SessionStarted(s network.Session) { l.add("start", s) }
func (l *sessionLog) SessionStopped(s network.Session) { l.add("stop", s) }
func (l *sessionLog) SessionUpdated(s network.Session) { l.add("update", s) }

func (l *sessionLog) wait(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l.mu.Lock()
		ev := append([]string(nil), l.events...)
		l.mu.Unlock()
		if len(ev) >= n || time.Now().After(deadline) {
			return ev
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// With a network, the attach names the modem's cell and a move is a
// location update, over HTTP as firmware-sim modem --network does.
func TestCellWithNetwork(t *testing.T) {
	log := &sessionLog{}
	n := network.New(network.Options{Sessions: log})
	srv := httptest.NewServer(network.NewHandler(n, nil))
	defer srv.Close()
	client := network.NewClient(srv.URL, srv.Client())
	client.WatchWait = time.Second

	start := network.Cell{MCC: "460", MNC: "03", TAC: 6699, ECI: 27446212}
	h := newHarness(t, Config{Personality: "simcom", SIM: testSIM(), Network: client, Cell: &start})
	h.settle()
	waitStat(t, h.m, 1)
	if ev := log.wait(t, 1); len(ev) != 1 || ev[0] != "start 460-03-6699-27446212" {
		t.Fatalf("after the attach: %q", ev)
	}
	if err := h.m.SetCell(network.Cell{MCC: "460", MNC: "11", TAC: 6700, ECI: 27446213}); err != nil {
		t.Fatal(err)
	}
	want := []string{"start 460-03-6699-27446212", "update 460-11-6700-27446213"}
	if ev := log.wait(t, 2); len(ev) != 2 || ev[1] != want[1] {
		t.Fatalf("after the move: %q, want %q", ev, want)
	}
	// A SIM swap attaches again, in the cell the modem is in now.
	if err := h.m.SwapSIM(t.Context(), SIM{ICCID: "8910042348144559361", IMSI: "001010123456789"}, 0); err != nil {
		t.Fatal(err)
	}
	ev := log.wait(t, 4)
	if len(ev) < 4 || ev[2] != "stop 460-11-6700-27446213" || ev[3] != "start 460-11-6700-27446213" {
		t.Errorf("after the swap: %q", ev)
	}
}

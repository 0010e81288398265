// Package broker embeds nats-server (v2.15) with JetStream on disk and its
// MQTT 3.1.1 listener, and gives the verifier its side of it: durable
// report consumption, device commands and tenant alerts.
//
// # Who may do what
//
// Every connection goes through the server's CustomClientAuthentication
// hook. The broker's own connections use a random per-process credential
// and may do anything. Every other connection must come in over MQTT
// (plain NATS from outside is refused) and is authenticated by the
// Authenticator the caller gives New, which maps username and password to
// a Principal. Permissions follow the principal (topics as NATS subjects):
//
//	device d     publish   cardbind.v1.devices.d.report, cardbind.v1.devices.d.status
//	             subscribe cardbind.v1.devices.d.command, $MQTT.sub.>
//	tenant t     publish   nothing
//	             subscribe cardbind.v1.tenants.t.alerts.*, $MQTT.sub.>
//
// "$MQTT.sub.>" is the deliver subject of the JetStream consumer behind a
// QoS 1 subscription, which the subscribing client subscribes to itself
// (server/mqtt.go processJSConsumer); MQTT clients cannot name "$MQTT."
// subjects in their own SUBSCRIBEs, so it grants nothing else.
//
// # MQTT client ids: no session takeover
//
// A CONNECT with a client id that an open connection holds closes that
// connection and takes its session over (MQTT 3.1.1 section 3.1.4; with
// a clean session it also wipes the stored session). So the client id is
// checked too, before nats-server acts on it:
//
//	device d     must use client id d (what cardbind's agent sends)
//	tenant t     any id, unless an open connection of another principal
//	             holds it (a device's, another tenant's) or another tenant
//	             owns it; the first tenant to use an id owns it for good
//	             (JetStream bucket cardbind_mqtt_client_ids, keyed by the
//	             id's SHA-256), so an offline persistent session is safe
//	             too; ids starting "cardbind-internal-" are the broker's
//
// Subscribers of one tenant share its ids (a rotated credential resumes
// the session). A refused connection gets CONNACK 5, not authorized (an
// authenticator cannot pick 2, identifier rejected), the holder stays
// connected, and Stats.ClientIDRefused counts it (within AuthRefused),
// with a warning that names the principal and the id.
//
// Not covered: a subscriber may use the id of a device that is offline
// (devices are told apart by credential, not by a reserved id syntax).
// cardbind's agent uses a clean session, so there is nothing to take;
// the device takes its id back when it connects, and the subscriber is
// refused while it is connected. Claims are never released: an id a
// tenant used once stays its own until an operator deletes the key.
//
// nats-server gives the authenticator no accessor for the client id
// (ClientOpts has no MQTT field). It does append it, quoted, to the
// connection's label right after reading CONNECT and before it calls the
// authenticator (server/mqtt.go mqttParse, then mqttProcessConnect), and
// the hook reads it from there. A label of another shape refuses every
// outside MQTT connection rather than skip the check, so a nats-server
// upgrade that changes it fails this package's tests.
//
// # Refused publishes are counted
//
// nats-server drops a publish outside the permissions but still PUBACKs a
// QoS 1 one; no event or advisory is emitted. The only trace is the
// server's log line "Publish Violation - Subject ...", so the slog bridge
// recognises it (and "Subscription Violation"), counts it in Stats and
// logs it with the offending principal, looked up by connection id.
//
// # Reports: durable, at least once
//
// A QoS 1 PUBLISH is stored in the stream $MQTT_msgs under
// "$MQTT.msgs.<subject>" before nats-server sends the PUBACK. The stream
// has interest retention, so the broker creates a durable pull consumer
// on it (filter "$MQTT.msgs.cardbind.v1.devices.*.report", AckAll) in
// Start, before any outside client may connect: from then on a PUBACKed
// report stays on disk until a verifier acks it, across verifier stops,
// crashes and broker restarts. SubscribeReports consumes it, one
// subscription at a time; the handler acks each report when its effect
// is durable, in any order, and the broker acks the consumer up to the
// first report not yet acked, once for many (acks.go).
//
// Limits: a PUBACKed report survives a crash of the process; to survive a
// crash of the machine, set Config.SyncAlways (nats-server otherwise
// fsyncs every two minutes). $MQTT_msgs has no size or age limit, so
// reports pile up on disk while no verifier acks them. QoS 0 reports are
// not stored and never reach SubscribeReports.
//
// # Alerts: QoS 1 through MQTT
//
// nats-server delivers messages published over NATS to MQTT subscribers
// at QoS 0 only, so an alert published that way never reaches a
// persistent session that is offline (TestOfflinePersistentSessionGetsAlerts
// shows it). Two ways around it were measured against an offline
// persistent QoS 1 session:
//
//   - publishing over MQTT at QoS 1 with the broker's own paho client on
//     its own listener: delivered on reconnect, at QoS 1;
//   - writing into $MQTT_msgs over JetStream ("$MQTT.msgs.<subject>"),
//     as the server's MQTT path does: delivered only with the internal
//     header "Nmqtt-Pub: 1"; without it the message is stored, never
//     delivered and stays pending on the session's consumer. It also
//     reaches no QoS 0 subscriber (mosquitto_sub by default), which would
//     need a second, plain NATS publish carrying the same header, and the
//     two are not atomic.
//
// PublishAlert uses the first: it is the supported path and depends on no
// internal header, and its PUBACK means the alert is stored for every QoS 1
// subscription. The client authenticates with the internal credential,
// dials the listener's own address (loopback when it listens on all
// interfaces) and, with TLS, accepts exactly the listener's certificate.
// Its MQTT client id has a random suffix, so no outside client can take
// its session over.
package broker

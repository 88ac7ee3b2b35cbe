package bus

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/nats-io/nats-server/v2/server"

	"herald/app"
)

// The NATS client port: backends connect to the embedded server with their
// app's credentials, publish to the app's API subjects and read its events.
//
// API subjects (answered by api.NATSAPI, in the queue group APIQueue):
//
//	herald.<app>.api.events        body of POST /apps/{id}/events
//	herald.<app>.api.batch_events  body of POST /apps/{id}/batch_events
//
// Every client user logs in to its app's own account (accounts.go), fenced
// there by AccountPermissions; the node's own in-process connection, in the
// global account, is the only user with full permissions. ClientPermissions
// are the grants an external deployment's operator gives app users in one
// shared account (docs/nats.md "External NATS").

// API endpoints (the last token of an API subject).
const (
	APIEvents      = "events"
	APIBatchEvents = "batch_events"
	// APIQueue is the queue group of API subscribers: in a cluster each
	// request is handled by one node.
	APIQueue = "herald-api"
)

const (
	apiInfix = ".api."
	// internalUser is the node's own connection. '$' is outside the
	// characters configs allows in a NATS user name, so no app can take it.
	internalUser = "$herald"
	// inboxRoot is nats.go's default inbox prefix; an app's own inboxes are
	// InboxPrefix(app) below it.
	inboxRoot = "_INBOX"
)

// ErrClientListen: ClientListen is not a usable host:port.
var ErrClientListen = errors.New("bus: invalid client listen address")

// ClientUser is one set of NATS credentials for an app: a user name with a
// password, an nkey, or both (each becomes its own server user with the same
// permissions). A Password starting with "$2" is taken as a bcrypt hash.
type ClientUser struct {
	App      string // app id the credentials are fenced to
	User     string // "" = no user/password login
	Password string
	// PreviousPasswords are accepted too while a secret rotates
	// (apps[].previous_secrets, when nats.password is not set).
	PreviousPasswords []string
	Nkey              string // public user nkey ("U..."); "" = none
}

// ClientUsersOf is the NATS credentials of apps: user/password (default:
// app id and secret, and the previous secrets while listed) and, when set,
// an nkey.
func ClientUsersOf(apps []*app.App) []ClientUser {
	out := make([]ClientUser, len(apps))
	for i, a := range apps {
		out[i] = ClientUser{App: a.ID, User: a.NATSUser(), Password: a.NATSPassword(), Nkey: a.NATS.Nkey}
		if a.NATS.Password == "" {
			out[i].PreviousPasswords = a.PreviousSecrets
		}
	}
	return out
}

// APISubject is the subject an app's backends publish API requests to:
// herald.<app>.api.<endpoint>.
func APISubject(app, endpoint string) string {
	return subjectRoot + app + apiInfix + endpoint
}

// APIWildcard is the subject the API subscribes to for one endpoint, across
// apps: herald.*.api.<endpoint>.
func APIWildcard(endpoint string) string { return APISubject("*", endpoint) }

// ParseAPISubject splits herald.<app>.api.<endpoint> into app and endpoint.
// It does not allocate; it does not check that app or endpoint exist.
func ParseAPISubject(subj string) (app, endpoint string, ok bool) {
	app, endpoint, ok = splitSubject(subj, apiInfix)
	if !ok || endpoint == "" || strings.IndexByte(endpoint, '.') >= 0 {
		return "", "", false
	}
	return app, endpoint, true
}

// InboxPrefix is the inbox prefix an app's NATS clients used for replies
// before apps had accounts of their own (nats.CustomInboxPrefix):
// _INBOX.<app>. It still works on the embedded server, as any prefix does,
// and is what an external deployment's single account needs
// (ClientPermissions).
func InboxPrefix(app string) string { return inboxRoot + "." + app }

// ClientPermissions is what app's client users may do: publish API requests
// for app; read its events live (herald.<app>.live.>) and its presence
// changes (herald.<app>.presence.>); read its stream
// HERALD_<app> with stream info, message gets (direct or not), and
// consumers of their own (ordered or pull); receive replies on
// InboxPrefix(app). sharedInbox adds subscribe on _INBOX.> for tools that
// cannot set an inbox prefix; with it, any client user can read every other
// user's replies, so it is for single-tenant deployments only.
func ClientPermissions(app string, sharedInbox bool) *server.Permissions {
	stream := StreamName(app)
	js := "$JS.API."
	pub := []string{
		APISubject(app, APIEvents),
		APISubject(app, APIBatchEvents),
		js + "STREAM.INFO." + stream,
		js + "STREAM.MSG.GET." + stream,
		js + "DIRECT.GET." + stream,
		js + "DIRECT.GET." + stream + ".>", // last message by subject
		js + "CONSUMER.CREATE." + stream,
		js + "CONSUMER.CREATE." + stream + ".>", // named, with or without a filter subject
		js + "CONSUMER.INFO." + stream + ".*",
		js + "CONSUMER.DELETE." + stream + ".*",
		js + "CONSUMER.MSG.NEXT." + stream + ".*",
		"$JS.FC." + stream + ".>", // flow control replies of push consumers
	}
	sub := []string{liveWildcard(app), presenceWildcard(app), InboxPrefix(app) + ".>"}
	if sharedInbox {
		sub = append(sub, inboxRoot+".>")
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: sub},
	}
}

// AccountPermissions is what app's client users may do in the app's own
// account (accounts.go): publish exactly what ClientPermissions lists (the
// API subjects and the reads of its stream), and subscribe to anything,
// since the account holds nothing but the app's own imports and inboxes.
// The publish fence keeps the answer to a wrong subject a clear
// "Permissions Violation" rather than a silent "no responders".
func AccountPermissions(app string) *server.Permissions {
	p := ClientPermissions(app, false)
	p.Subscribe = nil
	return p
}

// clientListen splits cfg.ClientListen into the server's Host and Port
// (port 0 becomes the server's "random port", -1).
func clientListen(addr string) (host string, port int, err error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%w %q: %v", ErrClientListen, addr, err)
	}
	port, err = strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%w %q: port must be 0 to 65535", ErrClientListen, addr)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return host, port, nil
}

// checkClientPort validates the client-port fields of cfg, and proves the
// address free so a taken port fails at once with a clear error (the server
// itself would only time out). Another process can still take the port
// between this check and the server's listen.
func checkClientPort(cfg Config) error {
	if cfg.ClientListen == "" {
		return nil
	}
	host, port, err := clientListen(cfg.ClientListen)
	if err != nil {
		return err
	}
	for i, u := range cfg.ClientUsers {
		if !ValidApp(u.App) {
			return fmt.Errorf("bus: client user %d: %w: %q", i, ErrInvalidApp, u.App)
		}
		if u.User == "" && u.Nkey == "" {
			return fmt.Errorf("bus: client user %d (app %q): neither user nor nkey", i, u.App)
		}
		if u.User == internalUser {
			return fmt.Errorf("bus: client user %d (app %q): user name %q is reserved", i, u.App, u.User)
		}
	}
	if port == server.RANDOM_PORT {
		return nil
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("bus: client listen %s: %w", cfg.ClientListen, err)
	}
	return ln.Close()
}

// applyClientPort sets the client listener and its authentication on opts
// when cfg has a client port; otherwise it leaves opts in-process only.
// cfg must have passed checkClientPort.
func applyClientPort(opts *server.Options, cfg Config) {
	if cfg.ClientListen == "" {
		opts.DontListen = true
		return
	}
	opts.DontListen = false
	opts.Host, opts.Port, _ = clientListen(cfg.ClientListen)
	applyAuth(opts, cfg)
}

// applyAuth makes the server require a login, decided by clientAuth
// (clientauth.go): the node's own connection with full permissions
// (streams, JetStream API, live subjects, API replies), and each app's
// users fenced to the app.
func applyAuth(opts *server.Options, cfg Config) {
	auth := cfg.auth
	if auth == nil {
		auth = newClientAuth(cfg)
	}
	opts.CustomClientAuthentication = auth
	opts.AlwaysEnableNonce = true // for nkey logins
	opts.Users, opts.Nkeys = nil, nil
}

// newInternalPassword returns 32 random hex characters.
func newInternalPassword() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// ClientURL is the URL NATS clients reach the client port at, e.g.
// nats://127.0.0.1:4222 (with the port actually bound, when the config asked
// for port 0), or "" when there is no client port. An unspecified host
// (":4222", "0.0.0.0") is reported as 127.0.0.1. In external mode it is the
// URL of the server the node is connected to, password redacted ("" while
// disconnected).
func (b *Bus) ClientURL() string {
	if b.cfg.Mode == ModeExternal {
		return b.nc.ConnectedUrlRedacted()
	}
	if b.cfg.ClientListen == "" {
		return ""
	}
	addr, ok := b.srv.Addr().(*net.TCPAddr)
	if !ok || addr == nil {
		return ""
	}
	host, _, _ := net.SplitHostPort(b.cfg.ClientListen)
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "nats://" + net.JoinHostPort(host, strconv.Itoa(addr.Port))
}

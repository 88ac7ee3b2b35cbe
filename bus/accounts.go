package bus

import (
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats-server/v2/server"
)

// Per-app NATS accounts on the embedded server (docs/nats.md "Accounts").
//
// Herald's own subjects and streams live in the server's global account,
// with the node's own connection: that is where JetStream is enabled and
// where every node's subscriptions meet. Each app's NATS users log in to an
// account of their own, AppAccountName(app), which imports from the global
// account only what the app may use:
//
//   - its API subjects herald.<app>.api.> as a service: the request's reply
//     subject is rewritten by the server, so the answer comes back to the
//     requester's own inbox, whatever its prefix;
//   - its live and presence subjects (herald.<app>.live.>,
//     herald.<app>.presence.>) as streams;
//   - the JetStream API subjects that read its stream HERALD_<app> (stream
//     info, message and direct gets, pull consumers of its own, consumer
//     info and delete) as services; the next-message requests of a pull
//     consumer answer with many messages, so that export is streamed.
//
// Nothing else of the global account, and nothing of another app's
// account, is visible from an app's account: a user who subscribes to ">"
// or "_INBOX.>" there sees its own app's traffic only. So nats.go's default
// inbox prefix is safe, and bus.client_shared_inbox is obsolete.
//
// Accounts are made in code, while the server runs (LookupOrRegisterAccount,
// AddServiceImport, AddStreamImport), never as Options.Accounts:
// nats-server#6890 reports streams losing their leader after a restart
// when accounts are built into the options (docs/stack.md §5). The server
// starts with the global account only, so JetStream is enabled there
// exactly as before, and app accounts never have JetStream of their own.
//
// An app's account is made the first time one of its users logs in, on
// that node only: an account costs about 36 KB (16 KB bare, the rest its
// imports; docs/benchmarks.md "Apps at scale"), so 10,000 apps' accounts
// on every node would cost 350 MB each. In a cluster, routes carry an
// account's subscriptions by name, and a node that does not have the
// account drops them ("Unknown account", logged at debug level by
// server.go's logger for app accounts). Nothing needs them: everything an
// app's user reaches is an import, served through Herald's account on the
// user's own node, whose interest crosses the routes as usual (requests
// and their replies, live and presence events, stream reads; tested by
// node/apps_test.go TestRegistryCluster); and an app user may publish only
// to imported subjects, so no message is ever meant for the same account
// on another node. An account stays until the process ends: a removed
// app's users can no longer log in (RecheckClients closes those
// connected), and an app added again finds its imports in place.

// The global account's exports, one per kind of import. Public: only this
// file adds imports, and no client can.
var (
	apiExport      = subjectRoot + "*" + apiInfix + ">"
	streamExports  = []string{liveWildcard("*"), presenceWildcard("*")}
	jsReadExports  = []string{"$JS.API.STREAM.INFO.*", "$JS.API.STREAM.MSG.GET.*", "$JS.API.DIRECT.GET.*", "$JS.API.DIRECT.GET.*.>", "$JS.API.CONSUMER.CREATE.*", "$JS.API.CONSUMER.CREATE.*.>", "$JS.API.CONSUMER.INFO.*.*", "$JS.API.CONSUMER.DELETE.*.*", "$JS.FC.*.>"}
	jsNextExport   = "$JS.API.CONSUMER.MSG.NEXT.*.*"
	accountsPrefix = "HERALD_APP_"
)

// AppAccountName is the NATS account of app's users: HERALD_APP_<app>.
func AppAccountName(app string) string { return accountsPrefix + app }

// appAccounts makes and remembers the apps' accounts on one server.
type appAccounts struct {
	srv    *server.Server
	herald *server.Account // the global account: Herald's subjects and streams

	mu    sync.Mutex
	byApp map[string]*server.Account
}

// newAppAccounts adds the global account's exports. Call it between
// server.NewServer and Start, so that no client logs in before them.
func newAppAccounts(srv *server.Server) (*appAccounts, error) {
	g := srv.GlobalAccount()
	if g == nil {
		return nil, errors.New("bus: accounts: the server has no global account")
	}
	if err := g.AddServiceExport(apiExport, nil); err != nil {
		return nil, fmt.Errorf("bus: accounts: export %s: %w", apiExport, err)
	}
	for _, s := range streamExports {
		if err := g.AddStreamExport(s, nil); err != nil {
			return nil, fmt.Errorf("bus: accounts: export %s: %w", s, err)
		}
	}
	for _, s := range jsReadExports {
		if err := g.AddServiceExport(s, nil); err != nil {
			return nil, fmt.Errorf("bus: accounts: export %s: %w", s, err)
		}
	}
	if err := g.AddServiceExportWithResponse(jsNextExport, server.Streamed, nil); err != nil {
		return nil, fmt.Errorf("bus: accounts: export %s: %w", jsNextExport, err)
	}
	return &appAccounts{srv: srv, herald: g, byApp: make(map[string]*server.Account)}, nil
}

// account returns app's account, making it and its imports the first time.
func (x *appAccounts) account(app string) (*server.Account, error) {
	if !ValidApp(app) {
		return nil, fmt.Errorf("%w: %q", ErrInvalidApp, app)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if acc := x.byApp[app]; acc != nil {
		return acc, nil
	}
	acc, _ := x.srv.LookupOrRegisterAccount(AppAccountName(app))
	if err := x.importsOf(acc, app); err != nil {
		return nil, err
	}
	x.byApp[app] = acc
	return acc, nil
}

// importsOf adds app's imports to acc.
func (x *appAccounts) importsOf(acc *server.Account, app string) error {
	stream := StreamName(app)
	services := []string{
		subjectRoot + app + apiInfix + ">",
		"$JS.API.STREAM.INFO." + stream,
		"$JS.API.STREAM.MSG.GET." + stream,
		"$JS.API.DIRECT.GET." + stream,
		"$JS.API.DIRECT.GET." + stream + ".>",
		"$JS.API.CONSUMER.CREATE." + stream,
		"$JS.API.CONSUMER.CREATE." + stream + ".>",
		"$JS.API.CONSUMER.INFO." + stream + ".*",
		"$JS.API.CONSUMER.DELETE." + stream + ".*",
		"$JS.API.CONSUMER.MSG.NEXT." + stream + ".*",
		"$JS.FC." + stream + ".>",
	}
	for _, s := range services {
		if err := acc.AddServiceImport(x.herald, s, ""); err != nil {
			return fmt.Errorf("bus: account of %q: import service %s: %w", app, s, err)
		}
	}
	for _, s := range []string{liveWildcard(app), presenceWildcard(app)} {
		if err := acc.AddStreamImport(x.herald, s, ""); err != nil && !errors.Is(err, server.ErrStreamImportDuplicate) {
			return fmt.Errorf("bus: account of %q: import stream %s: %w", app, s, err)
		}
	}
	return nil
}

// EnsureAccounts makes the NATS accounts of apps that do not have one yet,
// as their first logins would. The node does not call it (see the top of
// this file); the scale benchmark measures with it what eager accounts
// would cost (node/scale_test.go). Without a client port it does nothing.
func (b *Bus) EnsureAccounts(apps []string) error {
	if b.auth == nil || b.auth.accounts.Load() == nil {
		return nil
	}
	x := b.auth.accounts.Load()
	for _, id := range apps {
		if _, err := x.account(id); err != nil {
			return err
		}
	}
	return nil
}

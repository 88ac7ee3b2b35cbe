// Package testkit is the scaffolding Herald's tests share, so that each
// package's tests do not carry their own copy of it:
//
//   - free ports (FreePorts, FreePort, FreeAddr): loopback ports below the
//     ephemeral range, free for TCP and UDP when handed out, never handed
//     out twice by one process, and reserved against other test binaries
//     that use this package;
//   - deadline polling (WaitFor, Poll) instead of sleeping on an eventual
//     condition;
//   - goroutine leak checks: Main (or Run) for a package's TestMain, and
//     Goroutines/Leaked for a check around one test;
//   - WaitReady, the wait for a node's GET /readyz to answer 200;
//   - Layout and StartAll, the port and config layout of an N-node cluster
//     on loopback and the all-at-once start its nodes need, shared by the
//     in-process cluster tests (bus, node) and the multi-process ones
//     (tests/e2e, bench).
//
// It is imported only from _test.go files. It depends on the standard
// library and herald/configs alone, so that the tests of every other Herald
// package can use it without an import cycle (configs' own tests cannot).
//
// Set HERALD_TEST_STACKS=1 to have WaitFor print every goroutine's stack
// when it gives up.
package testkit

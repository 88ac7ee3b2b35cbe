package lifecycle

import (
	"testing"

	"herald/internal/testkit"
)

// TestMain fails the package when goroutines outlive the tests.
func TestMain(m *testing.M) { testkit.Main(m) }

package logwatch

import (
	"os"
	"testing"
	"time"
)

func TestZZProf(t *testing.T) {
	p := os.Getenv("PROFLOG")
	if p == "" {
		t.Skip()
	}
	for i := 0; i < 3; i++ {
		t1 := time.Now()
		st, err := ScanHistory(p, time.Time{}, time.Now().Add(time.Hour), func(Event) {})
		t.Log(time.Since(t1), st.Lines, st.Bytes, err)
	}
}

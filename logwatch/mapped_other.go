//go:build !linux

package logwatch

import (
	"context"
	"errors"
	"os"
)

var errCannotMap = errors.New("cannot map")

// scanMapped maps nothing here: scanFile reads the file with scanStream.
func scanMapped(context.Context, *os.File, int64, *Format, bool, *ScanStats, func(Event), func() error) error {
	return errCannotMap
}

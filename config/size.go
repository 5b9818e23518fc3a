package config

import (
	"fmt"
	"reflect"

	"github.com/dustin/go-humanize"
)

// ByteSize is a size in bytes written as "1GiB", "500MB" or "1048576".
type ByteSize int64

func (b ByteSize) String() string { return humanize.IBytes(uint64(b)) }

// MarshalYAML prints the size the way it is written.
func (b ByteSize) MarshalYAML() (any, error) { return b.String(), nil }

func byteSizeHook(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeOf(ByteSize(0)) {
		return data, nil
	}
	switch d := data.(type) {
	case string:
		n, err := humanize.ParseBytes(d)
		if err != nil {
			return nil, fmt.Errorf("invalid size %q (use e.g. 512MiB, 1GiB)", d)
		}
		return ByteSize(n), nil
	case ByteSize:
		return d, nil
	}
	return data, nil
}

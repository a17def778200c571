package bolt

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	bbolt "go.etcd.io/bbolt"
)

// Verify opens the ledger file at path read-only and checks that it is a
// ledger in this build's layout: a bbolt file consistent page by page, with
// this schema version and every bucket. It is how a backup is checked before
// it is reported written, so it never changes the file (Open would create
// missing buckets and stamp the version).
func Verify(path string) error {
	// bbolt would try to initialise an empty file, and fail to write it.
	if fi, err := os.Stat(path); err != nil {
		return fmt.Errorf("bolt: verify: %w", err)
	} else if fi.Size() == 0 {
		return fmt.Errorf("bolt: verify %s: the file is empty", path)
	}
	bdb, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return fmt.Errorf("bolt: verify %s: %w", path, err)
	}
	defer bdb.Close()
	err = bdb.View(func(tx *bbolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		if err := errors.Join(errs...); err != nil {
			return err
		}
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return fmt.Errorf("no %s bucket", bucketMeta)
		}
		v := meta.Get(keySchemaVersion)
		if string(v) != strconv.Itoa(schemaVersion) {
			return fmt.Errorf("schema version %q, want %d", v, schemaVersion)
		}
		for _, name := range allBuckets {
			if tx.Bucket(name) == nil {
				return fmt.Errorf("no %s bucket", name)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("bolt: verify %s: %w", path, err)
	}
	return nil
}

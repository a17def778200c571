package bolt_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	bbolt "go.etcd.io/bbolt"

	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/storage/bolt"
)

func TestVerify(t *testing.T) {
	// rawBolt makes a bbolt file holding only the given buckets, as a file
	// that is not a ledger, or a ledger cut short, would be.
	rawBolt := func(version string, buckets ...string) func(t *testing.T, path string) {
		return func(t *testing.T, path string) {
			bdb, err := bbolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer bdb.Close()
			err = bdb.Update(func(tx *bbolt.Tx) error {
				for _, name := range buckets {
					b, err := tx.CreateBucket([]byte(name))
					if err != nil {
						return err
					}
					if name == "meta" && version != "" {
						if err := b.Put([]byte("schema_version"), []byte(version)); err != nil {
							return err
						}
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	all := []string{"meta", "accounts", "scopes", "jobs", "pending", "notices", "history", "audit", "audit_scope", "limits", "events"}
	tests := []struct {
		name    string
		make    func(t *testing.T, path string)
		wantErr string // "" = verifies
	}{
		{"a backup", func(t *testing.T, path string) {
			db := openTemp(t)
			k := core.AccountKey{Scope: "s", User: "telegram:1"}
			if err := db.Update(t.Context(), func(tx core.Tx) error { return tx.PutAccount(core.Account{Key: k, Credits: 3}) }); err != nil {
				t.Fatal(err)
			}
			if err := db.BackupFile(path); err != nil {
				t.Fatal(err)
			}
		}, ""},
		{"every bucket, this version", rawBolt("3", all...), ""},
		{"missing", func(*testing.T, string) {}, "no such file"},
		{"empty file", func(t *testing.T, path string) { writeTestFile(t, path, "") }, "the file is empty"},
		{"not bbolt", func(t *testing.T, path string) { writeTestFile(t, path, strings.Repeat("not a database ", 1000)) }, "invalid"},
		{"a bbolt file of something else", rawBolt("", "other"), "no meta bucket"},
		{"a bucket missing", rawBolt("3", all[:len(all)-1]...), "no events bucket"},
		{"version 2, not upgraded", rawBolt("2", all[:len(all)-2]...), `schema version "2", want 3`},
		{"another schema version", rawBolt("4", all...), `schema version "4", want 3`},
		{"truncated", func(t *testing.T, path string) {
			rawBolt("3", all...)(t, path)
			if err := os.Truncate(path, 4096); err != nil {
				t.Fatal(err)
			}
		}, "verify"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "backup.db")
			tt.make(t, path)
			before, _ := os.ReadFile(path)
			err := bolt.Verify(path)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Verify = %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Verify = %v, want an error containing %q", err, tt.wantErr)
			}
			// A check must never repair, or it would hide what it found.
			if after, _ := os.ReadFile(path); string(after) != string(before) {
				t.Error("Verify changed the file")
			}
		})
	}
}

func writeTestFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

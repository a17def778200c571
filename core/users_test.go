package core_test

import (
	"context"
	"testing"

	"github.com/imaginebot/imaginebot/core"
)

// The directory finds a user by handle, case-insensitively, per platform,
// and follows renames.
func TestUserDirectory(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil)
	alice := core.User{Platform: core.PlatformTelegram, ID: "42", Name: "@Alice"}
	if err := e.svc.SeeUser(ctx, alice, "Alice"); err != nil {
		t.Fatal(err)
	}
	key, name, ok, err := e.svc.FindUser(ctx, core.PlatformTelegram, "alice")
	if err != nil || !ok || key != "telegram:42" || name != "@Alice" {
		t.Fatalf("found %q %q %v %v", key, name, ok, err)
	}
	if _, _, ok, _ := e.svc.FindUser(ctx, core.PlatformDiscord, "alice"); ok {
		t.Fatal("found on another platform")
	}
	if _, _, ok, _ := e.svc.FindUser(ctx, core.PlatformTelegram, "bob"); ok {
		t.Fatal("found someone never seen")
	}
	alice.Name = "@alice_w"
	if err := e.svc.SeeUser(ctx, alice, "alice_w"); err != nil {
		t.Fatal(err)
	}
	if name, _ := e.svc.UserName(ctx, "telegram:42"); name != "@alice_w" {
		t.Fatalf("name after a rename %q", name)
	}
}

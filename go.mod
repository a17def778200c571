module github.com/imaginebot/imaginebot

go 1.26.8

require (
	github.com/go-telegram/bot v1.19.0
	go.etcd.io/bbolt v1.5.0
	go.yaml.in/yaml/v3 v3.0.6
	golang.org/x/sync v0.24.0
	golang.org/x/time v0.16.0
)

require golang.org/x/sys v0.45.0 // indirect

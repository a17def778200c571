package main

import (
	"fmt"
	"regexp"
	"slices"

	"github.com/imaginebot/imaginebot/core"
)

// models[].api values.
const (
	apiChat       = string(core.APIChat)
	apiImages     = string(core.APIImages)
	apiMidjourney = string(core.APIMidjourney)
)

var (
	// imageSizeRe is the images API's size: WIDTHxHEIGHT in pixels.
	imageSizeRe = regexp.MustCompile(`^[1-9][0-9]{1,4}x[1-9][0-9]{1,4}$`)
	// imageWordRe is a quality or style value: the gateways' words are
	// open-ended ("hd", "high", "vivid", …), but never spaces or markup.
	imageWordRe     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$`)
	responseFormats = []string{"url", "b64_json"}
)

// validateAPI checks models[i].api and the keys that belong to it.
func (m ModelConfig) validateAPI(p *problems, key string) {
	only := func(api, name string, set bool) {
		if set {
			p.add(key+"."+name, "is only for api: %s; remove it, or set %s.api: %s", api, key, api)
		}
	}
	imagesKeys := func() {
		only(apiImages, "sizes", m.Sizes != nil)
		only(apiImages, "quality", m.Quality != "")
		only(apiImages, "style", m.Style != "")
		only(apiImages, "response_format", m.ResponseFormat != "")
	}
	switch m.API {
	case apiChat:
		imagesKeys()
		only(apiMidjourney, "action_cost", m.ActionCost != nil)
	case apiImages:
		m.validateImages(p, key)
		only(apiMidjourney, "action_cost", m.ActionCost != nil)
	case apiMidjourney:
		imagesKeys()
		m.validateMidjourney(p, key)
	default:
		p.add(key+".api", "%q is not a model API; use chat (the default: POST /v1/chat/completions), images (POST /v1/images/generations: DALL·E, gpt-image, Flux) or midjourney (the /mj task API)", m.API)
	}
}

func (m ModelConfig) validateMidjourney(p *problems, key string) {
	if m.Stream != nil && *m.Stream {
		p.add(key+".stream", "the midjourney API does not stream (progress comes from polling the task); remove it")
	}
	if m.SystemPrompt != "" {
		p.add(key+".system_prompt", "is sent only to chat models; remove it, or put its text in prompt_template")
	}
	if c := m.ActionCost; c != nil && (*c < 1 || *c > 1000) {
		p.add(key+".action_cost", "%d is out of range; use 1 to 1000 quota units per button pressed (default: the model's cost)", *c)
	}
}

func (m ModelConfig) validateImages(p *problems, key string) {
	if m.Stream != nil && *m.Stream {
		p.add(key+".stream", "the images API does not stream; remove it")
	}
	if m.SystemPrompt != "" {
		p.add(key+".system_prompt", "is sent only to chat models; remove it, or put its text in prompt_template")
	}
	if m.Sizes != nil && len(m.Sizes) == 0 {
		p.add(key+".sizes", "is empty; list at least one \"W:H\": WIDTHxHEIGHT, or remove it for the defaults of %s", m.upstreamID())
	}
	aspects := make([]string, 0, len(m.Sizes))
	for a := range m.Sizes {
		aspects = append(aspects, a)
	}
	slices.Sort(aspects) // problems in a stable order
	for _, a := range aspects {
		switch size := m.Sizes[a]; {
		case !core.ValidAspect(a):
			p.add(key+".sizes", "%q is not an aspect ratio; use W:H with sides 1–99, quoted, e.g. \"16:9\": 1792x1024", a)
		case !imageSizeRe.MatchString(size):
			p.add(fmt.Sprintf("%s.sizes[%q]", key, a), "%q is not a size; use WIDTHxHEIGHT in pixels, e.g. 1792x1024", size)
		}
	}
	if f := m.ResponseFormat; f != "" && !slices.Contains(responseFormats, f) {
		p.add(key+".response_format", "%q is not a response format; use url (default: the bot downloads the image) or b64_json (the image comes inline)", f)
	}
	for _, w := range []struct{ name, value, eg string }{
		{"quality", m.Quality, "hd for dall-e-3, high for gpt-image-1"},
		{"style", m.Style, "vivid or natural for dall-e-3"},
	} {
		if w.value != "" && !imageWordRe.MatchString(w.value) {
			p.add(key+"."+w.name, "%q is not a %s value; use one word the model knows (e.g. %s), or remove it", w.value, w.name, w.eg)
		}
	}
}

// upstreamID is the gateway's model id, as core.Model.ID has it.
func (m ModelConfig) upstreamID() string {
	if m.UpstreamModel != "" {
		return m.UpstreamModel
	}
	return m.Name
}

// coreModel is the validated model for the pipeline. upstreamStream is
// upstream.stream, which a chat model's stream overrides.
func (m ModelConfig) coreModel(upstreamStream bool) (core.Model, error) {
	api := core.API(m.API)
	text := m.PromptTemplate
	if text == "" {
		text = core.DefaultTemplate(api)
	}
	tmpl, err := core.ParseTemplate(m.Name, text)
	if err != nil {
		return core.Model{}, err
	}
	cm := core.Model{
		Name: m.Name, UpstreamModel: m.UpstreamModel, Label: m.Label, Cost: m.Cost,
		SystemPrompt: m.SystemPrompt, Template: tmpl, Stream: upstreamStream,
		API: api, AcceptsImage: m.AcceptsImage,
	}
	if m.Stream != nil {
		cm.Stream = *m.Stream
	}
	switch api {
	case core.APIImages:
		cm.Stream = false // upstream.stream is for chat models
		cm.Sizes, cm.Quality, cm.Style, cm.ResponseFormat = m.Sizes, m.Quality, m.Style, m.ResponseFormat
	case core.APIMidjourney:
		cm.Stream = false
		cm.ActionCost = m.Cost
		if m.ActionCost != nil {
			cm.ActionCost = *m.ActionCost
		}
	}
	return cm, nil
}

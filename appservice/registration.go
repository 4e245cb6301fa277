package appservice

import (
	"regexp"

	"go.mau.fi/util/random"
	mautrixas "maunium.net/go/mautrix/appservice"

	"github.com/matrix-recorder/recorder/config"
)

// GenerateRegistration makes a new registration with fresh tokens and a random
// sender_localpart (mautrix convention: the visible bot is a namespaced user of
// its own, because Synapse refuses /sync for the AS sender user).
func GenerateRegistration(cfg *config.Config) *mautrixas.Registration {
	c := *cfg
	c.Appservice.ASToken = random.String(64)
	c.Appservice.HSToken = random.String(64)
	reg := BuildRegistration(&c)
	reg.SenderLocalpart = random.String(32)
	return reg
}

// BuildRegistration is the registration described by cfg, tokens included.
func BuildRegistration(cfg *config.Config) *mautrixas.Registration {
	domain := regexp.QuoteMeta(cfg.Homeserver.Domain)
	rateLimited := false
	return &mautrixas.Registration{
		ID:              cfg.Appservice.ID,
		URL:             cfg.Appservice.Address,
		AppToken:        cfg.Appservice.ASToken,
		ServerToken:     cfg.Appservice.HSToken,
		SenderLocalpart: cfg.Appservice.Bot.Username,
		RateLimited:     &rateLimited,
		Namespaces: mautrixas.Namespaces{UserIDs: mautrixas.NamespaceList{
			{Regex: "^@" + regexp.QuoteMeta(cfg.Appservice.Bot.Username) + ":" + domain + "$", Exclusive: true},
			{Regex: "^@" + regexp.QuoteMeta(cfg.Appservice.UserPrefix) + ".*:" + domain + "$", Exclusive: true},
		}},
		// receive_ephemeral gates to-device dispatch in mautrix; the MSC2409
		// alias is what older Synapse versions read.
		EphemeralEvents:     true,
		SoruEphemeralEvents: true,
	}
}

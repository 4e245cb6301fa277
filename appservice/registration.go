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
func GenerateRegistration(hs config.HomeserverConfig, as config.AppserviceConfig) *mautrixas.Registration {
	as.ASToken = random.String(64)
	as.HSToken = random.String(64)
	reg := BuildRegistration(hs, as)
	reg.SenderLocalpart = random.String(32)
	return reg
}

// BuildRegistration is the registration the config sections describe,
// tokens included.
func BuildRegistration(hs config.HomeserverConfig, as config.AppserviceConfig) *mautrixas.Registration {
	domain := regexp.QuoteMeta(hs.Domain)
	rateLimited := false
	return &mautrixas.Registration{
		ID:              as.ID,
		URL:             as.Address,
		AppToken:        as.ASToken,
		ServerToken:     as.HSToken,
		SenderLocalpart: as.Bot.Username,
		RateLimited:     &rateLimited,
		Namespaces: mautrixas.Namespaces{UserIDs: mautrixas.NamespaceList{
			{Regex: "^@" + regexp.QuoteMeta(as.Bot.Username) + ":" + domain + "$", Exclusive: true},
			{Regex: "^@" + regexp.QuoteMeta(as.UserPrefix) + ".*:" + domain + "$", Exclusive: true},
		}},
		// receive_ephemeral gates to-device dispatch in mautrix; the MSC2409
		// alias is what older Synapse versions read.
		EphemeralEvents:     true,
		SoruEphemeralEvents: true,
	}
}

package protocol

import (
	"encoding/json"
)

// UserData is the parsed user_data of a verified pusher:signin
// (docs/protocol.md §4.2).
type UserData struct {
	// ID is the user id: a non-empty JSON string in user_data.
	ID string
	// UserInfo is the raw JSON of user_info, or nil when absent.
	UserInfo json.RawMessage
	// Watchlist lists the watched user ids in order (nil when absent). Its
	// length is not limited here; the caller enforces the watchlist limit.
	Watchlist []string
}

// ParseUserData parses a user_data string after its signature was verified.
// It must be a JSON object whose "id" is a non-empty string (a number is
// rejected even though it verifies: pusher-js drops such signins);
// "user_info" may be any JSON value; "watchlist", when present and not
// null, must be an array of strings. Errors are *Error with Code 4009
// (CodeUnauthorized), the code recommended for signin failures. The result
// does not alias userData.
func ParseUserData(userData string) (UserData, error) {
	var u UserData
	var id, info, watch []byte
	err := eachField([]byte(userData), func(key, val []byte) error {
		switch string(key) {
		case "id":
			id = val
		case "user_info":
			info = val
		case "watchlist":
			watch = val
		}
		return nil
	})
	if err != nil {
		return UserData{}, invalidUserData("not a JSON object")
	}
	if id == nil || isNull(id) {
		return UserData{}, invalidUserData("id is missing")
	}
	if u.ID, err = decodeString(id); err != nil || u.ID == "" {
		return UserData{}, invalidUserData("id must be a non-empty string")
	}
	if info != nil {
		u.UserInfo = append(json.RawMessage(nil), info...)
	}
	if watch != nil && !isNull(watch) {
		err = eachElement(watch, func(_ int, val []byte) error {
			s, err := decodeString(val)
			if err != nil {
				return err
			}
			u.Watchlist = append(u.Watchlist, s)
			return nil
		})
		if err != nil {
			return UserData{}, invalidUserData("watchlist must be an array of strings")
		}
	}
	return u, nil
}

func invalidUserData(why string) error {
	return &Error{Code: CodeUnauthorized, Message: "Invalid user_data: " + why}
}

// PresenceMember is the parsed channel_data of a presence subscription
// (docs/protocol.md §2.7).
type PresenceMember struct {
	// UserID is the canonical string form of user_id: the string itself, or
	// the number's JSON text (so 10 and "10" are the same user).
	UserID string
	// UserIDJSON is user_id's raw JSON (string or number), kept so events
	// can echo the type the app sent.
	UserIDJSON json.RawMessage
	// UserInfo is the raw JSON of user_info, or nil when absent.
	UserInfo json.RawMessage
}

// ParseChannelData parses a presence channel_data string after its signature
// was verified. It must be a JSON object with "user_id" a non-empty string or
// a number; "user_info" may be any JSON value. Size limits are the caller's.
// Errors are *Error with Code 0. The result does not alias channelData.
func ParseChannelData(channelData string) (PresenceMember, error) {
	var m PresenceMember
	var id, info []byte
	err := eachField([]byte(channelData), func(key, val []byte) error {
		switch string(key) {
		case "user_id":
			id = val
		case "user_info":
			info = val
		}
		return nil
	})
	if err != nil {
		return PresenceMember{}, invalidChannelData("not a JSON object")
	}
	switch {
	case len(id) > 0 && id[0] == '"':
		m.UserID, err = decodeString(id)
	case len(id) > 0 && (id[0] == '-' || (id[0] >= '0' && id[0] <= '9')):
		m.UserID = string(id)
	default:
		return PresenceMember{}, invalidChannelData("user_id must be a string or a number")
	}
	if err != nil || m.UserID == "" {
		return PresenceMember{}, invalidChannelData("user_id must not be empty")
	}
	m.UserIDJSON = append(json.RawMessage(nil), id...)
	if info != nil {
		m.UserInfo = append(json.RawMessage(nil), info...)
	}
	return m, nil
}

func invalidChannelData(why string) error {
	return &Error{Message: "Invalid channel_data: " + why}
}

package protocol

// luhnDigit returns the Luhn check digit for a string of decimal digits.
// The caller guarantees that digits holds only '0'..'9'.
func luhnDigit(digits string) byte {
	sum := 0
	// Walk from the right; the digit next to the (absent) check digit is doubled.
	double := true
	for i := len(digits) - 1; i >= 0; i-- {
		d := int(digits[i] - '0')
		if double {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
		double = !double
	}
	return byte('0' + (10-sum%10)%10)
}

// WithCheckDigit returns digits followed by their Luhn check digit: the
// IMEI of a TAC and serial number, or a valid ICCID from its first 18 or
// 19 digits. It returns "" when digits is empty or holds anything but
// '0'..'9'.
func WithCheckDigit(digits string) string {
	if !isDigits(digits) {
		return ""
	}
	return digits + string(luhnDigit(digits))
}

// luhnValid reports whether the last digit of s is the Luhn check digit of
// the digits before it. s must hold only decimal digits and be at least two
// digits long.
func luhnValid(s string) bool {
	return luhnDigit(s[:len(s)-1]) == s[len(s)-1]
}

// isDigits reports whether s is non-empty and holds only '0'..'9'.
func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// firstNonDigit returns the index of the first byte of s that is not a
// decimal digit, or -1.
func firstNonDigit(s string) int {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return i
		}
	}
	return -1
}

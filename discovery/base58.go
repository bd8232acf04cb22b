package discovery

// base58 implements the Bitcoin base58 alphabet used by aster1 addresses:
// big-endian base-58 digits, with each leading zero byte written as '1'.
// Both directions do schoolbook base conversion on little-endian uint32
// limbs, several digits at a time; inputs are small (an address record is at
// most maxRecordLen bytes), so quadratic time is fine.

const base58Alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

// base58Index maps an ASCII byte to its digit value, or -1 if it is not in
// the alphabet.
var base58Index = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := 0; i < len(base58Alphabet); i++ {
		t[base58Alphabet[i]] = int8(i)
	}
	return t
}()

const (
	digitsPerLimb = 5                      // 58^5 < 2^32
	limbBase      = 58 * 58 * 58 * 58 * 58 // 656356768
)

// base58Encode returns the base58 text of b.
func base58Encode(b []byte) string {
	zeros := 0
	for zeros < len(b) && b[zeros] == 0 {
		zeros++
	}
	// The number in base 58^5, little-endian; fed 3 bytes at a time so that
	// limb*2^24 + carry fits in a uint64.
	var limbs []uint32
	for i := zeros; i < len(b); {
		acc, mul := uint64(0), uint64(1)
		for k := 0; k < 3 && i < len(b); k, i = k+1, i+1 {
			acc, mul = acc<<8|uint64(b[i]), mul<<8
		}
		carry := acc
		for j := range limbs {
			carry += uint64(limbs[j]) * mul
			limbs[j] = uint32(carry % limbBase)
			carry /= limbBase
		}
		for ; carry > 0; carry /= limbBase {
			limbs = append(limbs, uint32(carry%limbBase))
		}
	}
	out := make([]byte, zeros+len(limbs)*digitsPerLimb)
	for i := 0; i < zeros; i++ {
		out[i] = '1'
	}
	p := len(out)
	for _, l := range limbs {
		for range digitsPerLimb {
			p--
			out[p] = base58Alphabet[l%58]
			l /= 58
		}
	}
	// Drop the most significant limb's leading zero digits.
	for p < len(out) && out[p] == '1' {
		p++
	}
	return string(append(out[:zeros], out[p:]...))
}

// base58Decode decodes base58 text. On an invalid character it returns
// ok=false and the byte offset of that character in s.
func base58Decode(s string) (b []byte, bad int, ok bool) {
	zeros := 0
	for zeros < len(s) && s[zeros] == '1' {
		zeros++
	}
	// The number in base 2^32, little-endian; fed 5 digits at a time.
	var limbs []uint32
	for i := zeros; i < len(s); {
		acc, mul := uint64(0), uint64(1)
		for k := 0; k < digitsPerLimb && i < len(s); k, i = k+1, i+1 {
			d := base58Index[s[i]]
			if d < 0 {
				return nil, i, false
			}
			acc, mul = acc*58+uint64(d), mul*58
		}
		carry := acc // stays below mul <= 58^5 < 2^32
		for j := range limbs {
			carry += uint64(limbs[j]) * mul
			limbs[j] = uint32(carry)
			carry >>= 32
		}
		if carry > 0 {
			limbs = append(limbs, uint32(carry))
		}
	}
	b = make([]byte, zeros, zeros+4*len(limbs))
	for j := len(limbs) - 1; j >= 0; j-- {
		for shift := 24; shift >= 0; shift -= 8 {
			if c := byte(limbs[j] >> shift); c != 0 || len(b) > zeros {
				b = append(b, c)
			}
		}
	}
	return b, 0, true
}

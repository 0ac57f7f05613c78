package dev.xinfer.pipelines;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import org.junit.Test;

public class KafkaDriverTest {
  private static double seconds(long i, int rate, int ramp) {
    return KafkaDriver.dueNanos(i, rate, ramp) / 1e9;
  }

  @Test
  public void withoutARampExamplesAreDueAtTheRate() {
    assertEquals(0.0, seconds(0, 1000, 0), 1e-9);
    assertEquals(1.5, seconds(1500, 1000, 0), 1e-9);
  }

  @Test
  public void aRampRisesFromATenthOfTheRateToAllOfItThenStays() {
    int rate = 20_000;
    int ramp = 60;
    // A ramp from 2,000/s to 20,000/s over 60 s sends (2,000 + 20,000) / 2 x 60 = 660,000.
    assertEquals(0.0, seconds(0, rate, ramp), 1e-9);
    assertEquals(60.0, seconds(660_000, rate, ramp), 1e-6);
    assertEquals(61.0, seconds(680_000, rate, ramp), 1e-6);
    // It rises by 300/s each second from 2,000/s: 2,150 in the first second.
    assertEquals(1.0, seconds(2_150, rate, ramp), 1e-6);
    // Half way through the ramp the rate is 11,000/s: 1,100 examples in the 0.1 s around 30 s.
    double at30 = seconds(2_000 * 30 + 150 * 30 * 30, rate, ramp);
    assertEquals(30.0, at30, 1e-6);
    long atHalf = 2_000 * 30 + 150 * 30 * 30;
    assertEquals(0.1, seconds(atHalf + 550, rate, ramp) - seconds(atHalf - 550, rate, ramp), 1e-3);
    // Never earlier for a later example.
    for (long i = 1; i < 700_000; i += 997) {
      assertTrue(seconds(i, rate, ramp) >= seconds(i - 1, rate, ramp));
    }
  }
}
